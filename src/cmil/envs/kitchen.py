"""Franka Kitchen from pixels, as in the paper: microwave, kettle, light switch, slide cabinet.

Physics, action handling and the initial state are gymnasium-robotics 1.4.2's `FrankaKitchen-v1`
(`KitchenEnv`, the D4RL / relay-policy-learning model): 9 joint-velocity actions in [-1, 1] scaled to
+-2 rad/s (m/s for the fingers) and integrated into position targets, 40 physics substeps of 2 ms per
step (0.08 s), 280 steps per episode. This module wraps that env; it does not re-implement physics.

What the wrapper adds (see docs/kitchen.md):
- 64x64 uint8 frames from the paper's free camera (distance 1.86, lookat (-0.3, 0.5, 2.0), azimuth 90,
  elevation -60), rendered with `OffscreenCamera` (fast visuals: no shadows).
- The oven light: in the model the light is always on and the lightblock *shadows* it until the switch
  turns; with shadows off it would look on from the first frame. We set the light's intensity from the
  switch angle instead, reproducing the shadowed model's look (off until ~-0.2 rad, fully on by -0.3).
- Task completion with D4RL's semantics: a task is done when the L2 distance between its joint values
  in `qpos` and its goal is below BONUS_THRESH = 0.3 (for the kettle: its 7-dim free-joint pose,
  position in metres and quaternion together). Completions are sticky within an episode.
- A small uniform perturbation of the initial arm joints (`init_noise`), seeded by `reset(seed=...)`.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil.envs.rendering import GuardedRender, OffscreenCamera, RendererGuard  # noqa: E402

TASKS: tuple[str, ...] = ("microwave", "kettle", "light switch", "slide cabinet")
"""The paper's four subtasks (D4RL's kitchen-complete set), in the order of its demos."""
EPISODE_LENGTH = 280
BONUS_THRESH = 0.3
PAPER_CAMERA = dict(distance=1.86, lookat=(-0.3, 0.5, 2.0), azimuth=90.0, elevation=-60.0)
N_ARM = 7  # arm joints; qpos[7:9] are the fingers, qpos[9:] the kitchen objects

# Oven light intensity vs. light-switch angle, matching renders of the model with shadows on.
_LIGHT_OFF_ANGLE, _LIGHT_ON_ANGLE = -0.15, -0.3


def _gr_kitchen():
    """gymnasium-robotics' kitchen module (imported lazily: it pulls in MuJoCo)."""
    from gymnasium_robotics.envs.franka_kitchen import kitchen_env

    return kitchen_env


def task_distances(qpos: np.ndarray) -> dict[str, float]:
    """L2 distance of each task's joint values in `qpos` to its goal (gymnasium-robotics/D4RL tables)."""
    kitchen_env = _gr_kitchen()
    qpos = np.asarray(qpos, float)
    return {t: float(np.linalg.norm(qpos[kitchen_env.OBS_ELEMENT_INDICES[t]] - kitchen_env.OBS_ELEMENT_GOALS[t]))
            for t in TASKS}


def tasks_satisfied(qpos: np.ndarray) -> dict[str, bool]:
    """Whether each task's object is within BONUS_THRESH of its goal right now."""
    return {t: d < BONUS_THRESH for t, d in task_distances(qpos).items()}


class FrankaKitchenPixels(gym.Env):
    """gymnasium-robotics' KitchenEnv with image observations and the paper's episode and success rules."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(self, image_size: int = 64, init_noise: float = 0.02, episode_length: int = EPISODE_LENGTH,
                 robot_noise_ratio: float = 0.01, object_noise_ratio: float = 0.0005,
                 camera: dict | None = None, seed: int | None = None):
        """
        image_size: frames are (image_size, image_size, 3) uint8.
        init_noise: half-width (rad) of the uniform noise added to the 7 arm joints at reset; 0 gives
            the model's fixed initial pose (the paper's ten demos share one identical first frame).
        episode_length: steps before `truncated=True` (the paper: 280).
        robot_noise_ratio, object_noise_ratio: gymnasium-robotics' observation-noise scales; the robot
            noise enters the joint-velocity controller (as in D4RL), so it also makes dynamics stochastic.
        camera: free-camera parameters (default: the paper's).
        seed: seeds the first `reset` that is called without a seed.
        """
        kitchen_env = _gr_kitchen()
        assert kitchen_env.BONUS_THRESH == BONUS_THRESH  # the paper's (D4RL's) threshold
        self.kitchen = kitchen_env.KitchenEnv(
            tasks_to_complete=list(TASKS), terminate_on_tasks_completed=False,
            remove_task_when_completed=True, object_noise_ratio=object_noise_ratio,
            robot_noise_ratio=robot_noise_ratio)
        self.robot = self.kitchen.robot_env
        self.model, self.data = self.kitchen.model, self.kitchen.data
        assert self.robot.frame_skip == 40 and abs(self.robot.dt - 0.08) < 1e-9

        self.image_size = image_size
        self.init_noise = float(init_noise)
        self.episode_length = int(episode_length)
        self._first_seed = seed
        self.observation_space = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (9,), np.float32)
        self.camera = OffscreenCamera(self.model, image_size, **(camera or PAPER_CAMERA))
        import mujoco

        self._light = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_LIGHT, "ovenlight")
        self._light_diffuse = self.model.light_diffuse[self._light].copy()
        self._light_specular = self.model.light_specular[self._light].copy()
        self.t = 0
        self.completed: list[str] = []

    # ----- simulator state helpers (used by tests and the expert) -----
    def state_vector(self) -> np.ndarray:
        """qpos (robot 9 + objects 21) and qvel (robot 9 + objects 20): 59 float64 values."""
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def set_sim_state(self, qpos: np.ndarray, qvel: np.ndarray | None = None) -> None:
        """Set the simulator state by hand (tests, diagnostics); also refreshes the controller's reading."""
        qvel = np.zeros(self.model.nv) if qvel is None else qvel
        self.robot.set_state(np.asarray(qpos, float), np.asarray(qvel, float))
        self.robot._get_obs()  # the velocity controller integrates from the last (noisy) joint reading
        self._update_completed()

    def _update_completed(self) -> dict[str, bool]:
        now = tasks_satisfied(self.data.qpos)
        for task in TASKS:
            if now[task] and task not in self.completed:
                self.completed.append(task)
        return now

    def _info(self, now: dict[str, bool]) -> dict:
        return {
            "success": len(self.completed) == len(TASKS),
            "tasks_completed": len(self.completed),
            "completed": list(self.completed),
            "tasks_now": int(sum(now.values())),
            "state": self.state_vector(),
        }

    # ----- rendering -----
    def render(self) -> np.ndarray:
        # Emulate the shadowed oven light (see module docstring): scale it with the switch angle.
        angle = self.data.qpos[self.kitchen_index("light switch")[0]]
        on = float(np.clip((angle - _LIGHT_OFF_ANGLE) / (_LIGHT_ON_ANGLE - _LIGHT_OFF_ANGLE), 0.0, 1.0))
        self.model.light_active[self._light] = on > 0
        self.model.light_diffuse[self._light] = self._light_diffuse * on
        self.model.light_specular[self._light] = self._light_specular * on
        return self.camera.render(self.data)

    @staticmethod
    def kitchen_index(task: str) -> np.ndarray:
        """Indices in qpos of a task's joint values."""
        return _gr_kitchen().OBS_ELEMENT_INDICES[task]

    # ----- gymnasium API -----
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        super().reset(seed=seed)
        # Seeds gymnasium-robotics' own generator (observation/controller noise) from ours.
        self.kitchen.reset(seed=int(self.np_random.integers(2**31)))
        qpos = self.data.qpos.copy()
        qpos[:N_ARM] += self.np_random.uniform(-self.init_noise, self.init_noise, N_ARM)
        self.completed = []
        self.t = 0
        self.set_sim_state(qpos, np.zeros(self.model.nv))
        now = self._update_completed()
        return self.render(), self._info(now)

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64).reshape(9), -1.0, 1.0)
        self.kitchen.step(action)
        self.t += 1
        now = self._update_completed()
        # Oracle reward (never trained on): tasks satisfied now, as in the paper's demo files.
        reward = float(sum(now.values()))
        truncated = self.t >= self.episode_length
        return self.render(), reward, False, truncated, self._info(now)

    def close(self) -> None:
        self.camera.close()
        self.kitchen.close()


def make_kitchen_env(seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
    """The paper's Franka Kitchen task (see FrankaKitchenPixels for kwargs), guarded as this process's renderer."""
    if RendererGuard.busy():  # fail before building a second GL context, not after
        raise RuntimeError("a rendering env is already open in this process; close it before making 'kitchen'")
    return GuardedRender(FrankaKitchenPixels(image_size=image_size, seed=seed, **kwargs))
