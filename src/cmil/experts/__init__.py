"""Experts that produce demonstrations. Each may read simulator state from the env it acts in."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Expert(Protocol):
    def reset(self) -> None:
        """Called after every `env.reset()`."""

    def act(self) -> np.ndarray:
        """The expert's action for the env's current state, in [-1, 1]."""
