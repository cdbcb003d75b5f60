"""Experts that produce demonstrations. Each may read simulator state from the env it acts in."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Expert(Protocol):
    def reset(self) -> None:
        """Called after every `env.reset()`."""

    def act(self) -> np.ndarray:
        """The expert's action for the env's current state, in [-1, 1]."""


# Which expert acts in which task ('module:function' taking the env): the one place that pairs them,
# so that envs/ never names experts/. Meta-World tasks ("mw-<task>") share one scripted expert.
EXPERTS = {"point": "cmil.experts.point:PointExpert", "kitchen": "cmil.experts.kitchen:make_kitchen_expert",
           "baoding": "cmil.experts.baoding:make_baoding_expert"}
EXPERT_PREFIXES = {"mw-": "cmil.experts.metaworld_expert:make_metaworld_expert"}


def make_expert(task: str, env) -> Expert:
    """The scripted/planning expert of `task`, acting in `env` (it may read simulator state)."""
    from cmil.envs import load_factory, task_spec

    task_spec(task)  # an unknown task is named as such
    factory = EXPERTS.get(task) or next((f for p, f in EXPERT_PREFIXES.items() if task.startswith(p)), None)
    if factory is None:
        raise ValueError(f"task {task!r} has no expert")
    return load_factory(factory)(env)
