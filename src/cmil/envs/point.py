"""A tiny pixel task without MuJoCo: a point mass reaching a random goal, drawn with numpy.

It obeys the full env contract (uint8 images, Box [-1, 1] actions, fixed length, `info["success"]`)
and renders thousands of frames a second, so every method's `--dry-run` test runs in seconds.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_LENGTH = 30
SUCCESS_RADIUS = 0.12
MAX_SPEED = 0.15


class PointReach(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, image_size: int = 64):
        self.image_size = image_size
        self.observation_space = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        grid = (np.arange(image_size) + 0.5) / image_size * 2 - 1
        self._xx, self._yy = np.meshgrid(grid, -grid)
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)

    def _frame(self) -> np.ndarray:
        img = np.full((self.image_size, self.image_size, 3), 40, np.uint8)
        for centre, radius, colour in ((self.goal, SUCCESS_RADIUS, (60, 200, 60)), (self.pos, 0.08, (220, 60, 60))):
            mask = (self._xx - centre[0]) ** 2 + (self._yy - centre[1]) ** 2 < radius**2
            img[mask] = colour
        return img

    def _info(self) -> dict:
        dist = float(np.linalg.norm(self.pos - self.goal))
        return {"success": dist < SUCCESS_RADIUS, "state": np.concatenate([self.pos, self.goal]), "distance": dist}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        return self._frame(), self._info()

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self.pos = np.clip(self.pos + MAX_SPEED * action, -1.0, 1.0)
        info = self._info()
        return self._frame(), -info["distance"], False, False, info

    def render(self):
        return self._frame()


def make_point_env(seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
    return gym.wrappers.TimeLimit(PointReach(image_size=image_size, **kwargs), EPISODE_LENGTH)
