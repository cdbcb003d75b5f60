"""Experts that produce demonstrations. Each may read simulator state from the env it acts in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from cmil.errors import UsageError


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
# Policies given with cmil.register_task(..., expert=policy): task -> policy(obs) -> action.
POLICIES: dict[str, Callable[[Any], Any]] = {}


def register_expert(task: str, policy: Callable[[Any], Any]) -> None:
    """Make `policy(obs) -> action` (the env's own units, see `policy.PolicyExpert`) the expert of `task`."""
    POLICIES[task] = policy


def has_expert(task: str) -> bool:
    return task in POLICIES or task in EXPERTS or any(task.startswith(p) for p in EXPERT_PREFIXES)


def make_expert(task: str, env, policy: str | Callable[[Any], Any] | None = None) -> Expert:
    """The expert of `task` acting in `env` (it may read simulator state): `policy` if given (a callable
    or 'module:function' / 'file.py:function' naming one), else the task's registered one."""
    from cmil.envs import load_factory, task_spec
    from cmil.experts.policy import PolicyExpert

    task_spec(task)  # an unknown task is named as such
    if policy is None:
        policy = POLICIES.get(task)
    if policy is not None:
        return PolicyExpert(env, load_factory(policy))
    factory = EXPERTS.get(task) or next((f for p, f in EXPERT_PREFIXES.items() if task.startswith(p)), None)
    if factory is None:
        raise UsageError(f"task {task!r} has no expert; give one (`cmil demos collect --expert module:function`, "
                         "or cmil.register_task(..., expert=policy)) or pass demos you have")
    return load_factory(factory)(env)
