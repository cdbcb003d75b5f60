"""A user's policy as an expert: `policy(obs) -> action` in the env's own observation and action units.

This is the convention of gymnasium and Minari (`minari.DataCollector`'s `expert_policy`): the policy
reads the observation the env itself returns (kept by `cmil.envs.gym_task.PixelTask` as `raw_obs`,
not the frame cmil learns from) and returns an action in the env's own bounds, which cmil rescales to
[-1, 1] for the demos. A policy object with a `reset()` method is reset at every episode start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from cmil.errors import UsageError


class PolicyExpert:
    def __init__(self, env: gym.Env, policy: Callable[[Any], Any]):
        try:
            self._to_unit = env.get_wrapper_attr("to_unit")
        except AttributeError:  # a built-in task: its actions are already in [-1, 1]
            self._to_unit = None
        self.env, self.policy = env, policy

    def reset(self) -> None:
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()

    def act(self) -> np.ndarray:
        obs = self.env.get_wrapper_attr("raw_obs") if self._to_unit is not None else None
        action = np.asarray(self.policy(obs), np.float64)
        size = int(np.prod(self.env.action_space.shape))
        if action.size != size:
            raise UsageError(f"expert policy returned an action of shape {action.shape}; the env takes {size} values")
        if self._to_unit is None:
            return np.clip(action.reshape(size), -1.0, 1.0).astype(np.float32)
        return self._to_unit(action)
