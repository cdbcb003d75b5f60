"""Meta-World v3 tasks from pixels.

Each task is Meta-World's own v3 Sawyer env with the benchmark's random object and goal placement:
every reset draws a new placement (`_random_reset_space`) from the env's seeded generator, as the
goal-observable envs do, rather than cycling through MT1's fixed list of 50 pre-drawn placements
(so evaluation placements are practically never among the training ones). `reset(seed=s)` reseeds that
generator, so the same `s` gives the same placement and the same first frame.

Observations are 64x64 uint8 RGB frames from a fixed free camera per task (`task_camera`): a front
view over the table for tasks with objects lying on it (push, reach, pick-place, ...), a view over
the robot's shoulder for tall fixtures (drawer, door, window, ...). They are rendered with
`OffscreenCamera` (fast visuals) from the env's MjModel/MjData; Meta-World's own renderer is never
used. Meta-World never ends an episode early, so every episode lasts `task_episode_length(task)`
steps. `info["state"]` is Meta-World's 39-dim state observation (hand, gripper, object poses, goal),
for diagnostics and the scripted expert only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil.envs.gym_task import check_action_repeat  # noqa: E402
from cmil.envs.rendering import GuardedRender, OffscreenCamera, RendererGuard  # noqa: E402

# Every Meta-World v3 task (names without the "-v3" suffix): its fixed episode length and its scripted
# expert's successes out of 50 seeded episodes (seeds 0-49) within that length, measured by
# benchmarks/metaworld_experts.py (benchmarks/results/metaworld_experts.json, docs/metaworld_tasks.md).
# Length rule: the smallest multiple of 50, at least 100, that is >= 1.3x the expert's slowest success
# (capped at Meta-World's 500); the first 12 tasks (docs/default_task.md) keep the lengths they had.
TASK_TABLE: dict[str, tuple[int, int]] = {
    "assembly": (150, 50), "basketball": (500, 50), "bin-picking": (350, 50), "box-close": (250, 43),
    "button-press": (100, 50), "button-press-topdown": (100, 50), "button-press-topdown-wall": (100, 50),
    "button-press-wall": (200, 50), "coffee-button": (100, 50), "coffee-pull": (150, 50),
    "coffee-push": (100, 50), "dial-turn": (150, 50), "disassemble": (450, 46), "door-close": (100, 50),
    "door-lock": (200, 50), "door-open": (150, 48), "door-unlock": (150, 50), "drawer-close": (150, 50),
    "drawer-open": (150, 50), "faucet-close": (100, 50), "faucet-open": (100, 50), "hammer": (150, 50),
    "hand-insert": (100, 50), "handle-press": (100, 50), "handle-press-side": (100, 50),
    "handle-pull": (200, 50), "handle-pull-side": (150, 50), "lever-pull": (150, 50),
    "peg-insert-side": (500, 46), "peg-unplug-side": (250, 48), "pick-out-of-hole": (200, 50),
    "pick-place": (100, 50), "pick-place-wall": (200, 50), "plate-slide": (100, 50),
    "plate-slide-back": (150, 50), "plate-slide-back-side": (100, 50), "plate-slide-side": (100, 50),
    "push": (100, 50), "push-back": (500, 47), "push-wall": (150, 50), "reach": (100, 50),
    "reach-wall": (100, 50), "shelf-place": (200, 48), "soccer": (200, 44), "stick-pull": (300, 43),
    "stick-push": (150, 50), "sweep": (150, 50), "sweep-into": (100, 46), "window-close": (150, 50),
    "window-open": (150, 50),
}
METAWORLD_TASKS: tuple[str, ...] = tuple(TASK_TABLE)
EXPERT_EPISODES = 50
EPISODE_LENGTHS: dict[str, int] = {t: length for t, (length, _) in TASK_TABLE.items()}
DEFAULT_EPISODE_LENGTH = 150

# Two free cameras (a free camera renders upright with mujoco.Renderer; some of Meta-World's named
# 'corner*' cameras come out upside down). The robot's base is at y = 0; objects lie at y ~ 0.4-0.95.
# FRONT: from beyond the far edge of the table, looking back at the robot from above; objects lying
# on the table, their goals and the gripper are all in view, and x/y placement reads directly.
FRONT_CAMERA: dict[str, Any] = dict(distance=0.75, azimuth=-90.0, elevation=-50.0, lookat=(0.0, 0.72, 0.06))
# SIDE: from beside the robot's right (+x) side, for tall fixtures whose working side faces the robot
# (drawer fronts, door and window handles, buttons), which the front camera would see from behind.
SIDE_CAMERA: dict[str, Any] = dict(distance=1.0, azimuth=135.0, elevation=-35.0, lookat=(0.0, 0.75, 0.1))
# Tasks whose fixture faces the robot (or a wall or shelf stands between it and the front camera) use
# SIDE; chosen by looking at the first frames of both cameras for every task.
SIDE_TASKS = (
    "basketball", "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push",
    "door-close", "door-lock", "door-open", "door-unlock", "drawer-close", "drawer-open", "faucet-close",
    "faucet-open", "hammer", "handle-press", "handle-pull", "lever-pull", "peg-insert-side", "peg-unplug-side",
    "reach-wall", "shelf-place", "window-close", "window-open")
# PUSH (the default task): the front view moved closer and steeper, so the puck (x in [-0.1, 0.1],
# y in [0.6, 0.7]) and the goal (y in [0.8, 0.9]) fill the frame: the puck is ~4x4 pixels instead of
# ~2x3 (docs/default_task.md).
PUSH_CAMERA: dict[str, Any] = dict(distance=0.6, azimuth=-90.0, elevation=-60.0, lookat=(0.0, 0.71, 0.02))
CAMERAS: dict[str, dict[str, Any]] = {"push": PUSH_CAMERA} | {t: SIDE_CAMERA for t in SIDE_TASKS}


def task_camera(task: str) -> dict[str, Any]:
    """The OffscreenCamera arguments used for `task`."""
    return CAMERAS.get(_mw_name(task).removesuffix("-v3"), FRONT_CAMERA)


def _mw_name(task: str) -> str:
    """'drawer-open', 'mw-drawer-open' or 'drawer-open-v3' -> Meta-World's 'drawer-open-v3'."""
    name = task.removeprefix("mw-")
    return name if name.endswith("-v3") else f"{name}-v3"


def task_episode_length(task: str) -> int:
    """The fixed episode length used for `task`."""
    return EPISODE_LENGTHS.get(_mw_name(task).removesuffix("-v3"), DEFAULT_EPISODE_LENGTH)


def _paint_object(model, rgba: Sequence[float]) -> None:
    import mujoco

    if len(rgba) != 4 or not all(0.0 <= float(c) <= 1.0 for c in rgba):
        raise ValueError(f"object_rgba must be 4 numbers in [0, 1] (RGBA), got {rgba!r}")
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "obj")
    if body < 0:
        raise ValueError("object_rgba: this task has no body named 'obj' to colour")
    for geom in np.flatnonzero(model.geom_bodyid == body):
        model.geom_matid[geom] = -1
        model.geom_rgba[geom] = np.asarray(rgba, np.float32)


def _scale_placements(mw, scale: float) -> None:
    """Shrink `mw`'s placement box (`_random_reset_space`, object then goal) about its centre by `scale`."""
    if not 0.0 < float(scale) <= 1.0:
        raise ValueError(f"placement_scale must be in (0, 1], got {scale!r}")
    if scale == 1.0:
        return
    box = mw._random_reset_space
    centre, half = (box.high + box.low) / 2.0, (box.high - box.low) / 2.0 * float(scale)
    mw._random_reset_space = gym.spaces.Box(centre - half, centre + half, dtype=np.float64)


class MetaWorldImageEnv(gym.Env):
    """One Meta-World v3 task with image observations, random placement and a fixed episode length."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str, seed: int | None = None, image_size: int = 64,
                 episode_length: int | None = None, camera: dict[str, Any] | None = None,
                 render: bool = True, object_rgba: Sequence[float] | None = None,
                 placement_scale: float = 1.0, action_repeat: int = 1):
        """`render=False` skips the frames (observations are black, no GL context is opened): the same
        dynamics, placements and expert actions, for benchmarks that only need the success flag.
        `object_rgba`: a flat colour (RGBA in [0, 1]) for the manipulated object's geoms (body 'obj') in place of
        their material; only what the camera sees changes (push's dark-red puck is a few low-contrast pixels
        at 64 x 64; docs/results.md, round 23).
        `placement_scale`: shrinks the box the object and goal placements are drawn from about its centre (1 is
        Meta-World's own range, 0.25 a box a quarter as wide on every axis), for tasks where the demonstrations
        should cover the starts, as in the paper's kitchen and Baoding tasks (docs/results.md, round 38).
        `action_repeat`: Meta-World steps per env step, the action held through them, one frame rendered at the
        end, their rewards summed; `episode_length` counts env steps. One Meta-World step is 12.5 ms (5 physics
        substeps), and the hand follows a mocap target with a lag, so one step's action moves it ~0.001 (about
        an eighth of a pixel at push's camera, docs/results.md round 44); the paper's kitchen steps are 80 ms."""
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = _mw_name(task)
        if self.task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World v3 task {task!r}")
        self.episode_length = episode_length if episode_length is not None else task_episode_length(task)
        mw = ALL_V3_ENVIRONMENTS[self.task]()
        # The same switches Meta-World's goal-observable envs flip: goal in the state, a fresh placement
        # at every reset, drawn from the env's own seeded generator rather than the global numpy one.
        mw._partially_observable = False
        mw.__dict__.pop("sawyer_observation_space", None)  # a cached property that depends on the flag
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True
        mw._set_task_called = True
        _scale_placements(mw, placement_scale)
        self.action_repeat = check_action_repeat(action_repeat)
        # Meta-World raises if stepped past max_path_length; make its horizon ours.
        mw.max_path_length = self.episode_length * self.action_repeat
        self.mw = mw
        if object_rgba is not None:
            _paint_object(mw.model, object_rgba)
        self.camera = OffscreenCamera(mw.model, image_size, **(camera or task_camera(task))) if render else None
        self.image_size = image_size
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._first_seed = seed
        self._seeded = False
        self._t = 0
        self._state: np.ndarray | None = None
        self._frame: np.ndarray | None = None

    @property
    def state_obs(self) -> np.ndarray:
        """Meta-World's current 39-dim state observation (what its scripted policies read)."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded:
            # The constructor's seed seeds the first reset; without one, draw fresh entropy.
            seed = self._first_seed
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % 2**32)
        if seed is not None:
            super().reset(seed=seed)
            self.mw.seed(int(seed))  # placement generator, and Meta-World's spaces
            self._seeded = True
        state, _ = self.mw.reset()
        self._t = 0
        self._state = np.asarray(state, np.float64)
        self._frame = self._render()
        return self._frame, {"success": False, "state": self._state.copy()}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.episode_length:
            raise RuntimeError(f"episode is over ({self.episode_length} steps); call reset()")
        action = np.clip(np.asarray(action, np.float32).reshape(4), -1.0, 1.0)
        reward = 0.0
        for _ in range(self.action_repeat):
            state, step_reward, _, _, mw_info = self.mw.step(action)
            reward += float(step_reward)
        self._t += 1
        self._state = np.asarray(state, np.float64)
        self._frame = self._render()
        info = {"success": bool(mw_info.get("success", 0.0) > 0.5), "state": self._state.copy()}
        # Meta-World never terminates on success; episodes run to the fixed length.
        return self._frame, float(reward), False, self._t >= self.episode_length, info

    def _render(self) -> np.ndarray:
        if self.camera is None:
            return np.zeros(self.observation_space.shape, np.uint8)
        return self.camera.render(self.mw.data)

    def render(self) -> np.ndarray | None:
        return None if self._frame is None else self._frame.copy()

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        if self.mw is not None:
            self.mw.close()
            self.mw = None


def make_metaworld_env(task: str, seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
    """Meta-World v3 `task` (e.g. 'drawer-open' or 'mw-drawer-open') from pixels, guarded renderer.

    kwargs: `episode_length` (default: `task_episode_length(task)`), `camera` (OffscreenCamera arguments).
    """
    if RendererGuard.busy():
        # Refuse before building: constructing the env already opens a GL context.
        RendererGuard.claim(object())  # raises the guard's explanatory error
    return GuardedRender(MetaWorldImageEnv(task, seed=seed, image_size=image_size, **kwargs))


def _factory_name(task: str) -> str:
    return "make_mw_" + task.replace("-", "_")


def _make_factory(task: str):
    def factory(seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
        return make_metaworld_env(task, seed=seed, image_size=image_size, **kwargs)

    factory.__name__ = factory.__qualname__ = _factory_name(task)
    factory.__doc__ = f"Meta-World v3 '{task}' from pixels (see make_metaworld_env)."
    return factory


# Module-level factories (make_mw_drawer_open, ...) so TaskSpec's 'module:function' strings can name them.
for _task in METAWORLD_TASKS:
    globals()[_factory_name(_task)] = _make_factory(_task)
del _task


def metaworld_task_specs() -> list:
    """TaskSpecs 'mw-<task>' for every task in METAWORLD_TASKS, for `cmil.envs.register`."""
    from cmil.envs import TaskSpec

    return [TaskSpec(f"mw-{t}", f"{__name__}:{_factory_name(t)}", task_episode_length(t),
                     f"Meta-World v3 {t} from pixels, {'side' if t in SIDE_TASKS else 'front'} camera",
                     expert_success=(TASK_TABLE[t][1], EXPERT_EPISODES))
            for t in METAWORLD_TASKS]
