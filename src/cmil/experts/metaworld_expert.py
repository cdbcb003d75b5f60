"""Meta-World's shipped scripted policies (`metaworld.policies.Sawyer<Task>V3Policy`) as cmil experts."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np


class MetaWorldExpert:
    """Acts with the task's scripted policy on the env's current 39-dim state observation.

    The policies are stateless functions of the state (hand, gripper, object and goal poses),
    so `reset` has nothing to clear; it exists for the Expert protocol.
    """

    def __init__(self, env: gym.Env):
        from metaworld.policies import ENV_POLICY_MAP

        from cmil.envs.metaworld_env import MetaWorldImageEnv

        base = env.unwrapped
        if not isinstance(base, MetaWorldImageEnv):
            raise TypeError(f"expected an env from cmil.envs.metaworld_env, got {type(base).__name__}")
        if base.task not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World ships no scripted policy for {base.task!r}")
        self.env = base
        self.policy = ENV_POLICY_MAP[base.task]()

    def reset(self) -> None:
        pass

    def act(self) -> np.ndarray:
        # The policies' proportional controllers warn whenever they saturate; the env clips anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action = self.policy.get_action(self.env.state_obs)
        return np.clip(np.asarray(action, np.float32), -1.0, 1.0)


def make_metaworld_expert(env: gym.Env) -> MetaWorldExpert:
    """The scripted expert of the Meta-World task that `env` (built by make_metaworld_env) runs."""
    return MetaWorldExpert(env)
