"""Proportional controller for the point task (reads the true positions)."""

from __future__ import annotations

import numpy as np

from cmil.envs.point import MAX_SPEED


class PointExpert:
    def __init__(self, env):
        self.env = env

    def reset(self) -> None:
        pass

    def act(self) -> np.ndarray:
        core = self.env.unwrapped
        return np.clip((core.goal - core.pos) / MAX_SPEED, -1.0, 1.0).astype(np.float32)
