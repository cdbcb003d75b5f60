"""Small gymnasium envs for the tests of `gym:ID` tasks, Minari import/export and the Python API.

Importing this module registers them (so `gym:gym_helpers:CmilTest/Slide-v0` works from the command
line too): a state-observation point mass that renders RGB frames with numpy, in variants that the
adapter must accept (wide action bounds, no time limit, `is_success` instead of `success`, no success
signal at all) or refuse (discrete actions, unbounded actions, no rendering).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FRAME = 96  # rendered side; the tests ask for 64x64 observations, so frames are always resized


class Slide(gym.Env):
    """A point on a line-free 2-D plane sliding to a goal; `action_scale` sets the Box bounds."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, action_scale: float = 2.0, success_key: str | None = "success",
                 discrete: bool = False, unbounded: bool = False, goal_radius: float = 0.15):
        self.render_mode = render_mode
        self.success_key, self.goal_radius = success_key, goal_radius
        self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float64)
        if discrete:
            self.action_space = spaces.Discrete(4)
        elif unbounded:
            self.action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        else:
            self.action_space = spaces.Box(-action_scale, action_scale, (2,), np.float32)
        self.action_scale = action_scale
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal])

    def _info(self) -> dict:
        info = {"distance": float(np.linalg.norm(self.pos - self.goal))}
        if self.success_key is not None:
            info[self.success_key] = float(info["distance"] < self.goal_radius)
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        return self._obs(), self._info()

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -self.action_scale, self.action_scale) / self.action_scale
        self.pos = np.clip(self.pos + 0.2 * action, -1.0, 1.0)
        return self._obs(), -self._info()["distance"], False, False, self._info()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        grid = (np.arange(FRAME) + 0.5) / FRAME * 2 - 1
        xx, yy = np.meshgrid(grid, -grid)
        img = np.full((FRAME, FRAME, 3), 30, np.uint8)
        for centre, colour in ((self.goal, (40, 200, 40)), (self.pos, (220, 50, 50))):
            img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < 0.12**2] = colour
        return img


def slide_expert(obs: np.ndarray) -> np.ndarray:
    """The env's own units: full speed (bound 2) towards the goal."""
    return np.clip(10.0 * (obs[2:4] - obs[0:2]), -2.0, 2.0).astype(np.float32)


# No registered time limit: cmil caps it (DEFAULT_MAX_EPISODE_STEPS or max_episode_steps).
gym.register("CmilTest/Slide-v0", entry_point="gym_helpers:Slide")
gym.register("CmilTest/SlideLimited-v0", entry_point="gym_helpers:Slide", max_episode_steps=25)
gym.register("CmilTest/SlideIsSuccess-v0", entry_point="gym_helpers:Slide", max_episode_steps=25, kwargs={"success_key": "is_success"})
gym.register("CmilTest/SlideNoSuccess-v0", entry_point="gym_helpers:Slide", max_episode_steps=25, kwargs={"success_key": None})
gym.register("CmilTest/Discrete-v0", entry_point="gym_helpers:Slide", kwargs={"discrete": True})
gym.register("CmilTest/Unbounded-v0", entry_point="gym_helpers:Slide", kwargs={"unbounded": True})


class NoRender(Slide):
    metadata = {"render_modes": [], "render_fps": 20}


gym.register("CmilTest/NoRender-v0", entry_point="gym_helpers:NoRender", max_episode_steps=25)
