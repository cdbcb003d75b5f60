"""Any gymnasium env as a cmil task: `gym:ID` by id, or an env factory registered from Python.

`PixelTask` turns an env that renders (`render_mode="rgb_array"`) into one that keeps cmil's env
contract (`cmil.envs`):

- the observation is the rendered frame, resized to (image_size, image_size, 3) uint8 with an
  area filter when shrinking (bicubic when enlarging); a non-square frame is stretched to a square,
  so nothing in view is cropped away;
- a bounded Box action space is rescaled to [-1, 1] (float32) and back; the env's own action is
  available as `to_native` / `to_unit` for experts and for `cmil.load_policy`;
- episodes end where the env ends them (terminated / truncated); an env with no time limit gets
  `max_episode_steps` (default `DEFAULT_MAX_EPISODE_STEPS`); a given `max_episode_steps` replaces
  the registered limit of a `gym:ID` env and caps a factory's env;
- `action_repeat` N > 1 holds each action for N of the env's own steps (`ActionRepeat`), rendering one
  frame at the end; the episode limit still counts the env's own steps, so an episode has about
  limit / N of cmil's steps;
- `info["success"]` is read from the info key `success_key` (default: `success`, else
  `is_success`, whichever the env reports); an env with neither has `reports_success == False`, and
  cmil then reports returns only;
- the env's own observation is kept as `raw_obs` (what a user's expert policy reads) and, when it
  flattens to at most `MAX_STATE_DIM` numbers, in `info["state"]` for diagnostics.

Everything the wrapper needs to know is checked once when it is built, by one probe reset, render
and step, so that a discrete or unbounded action space, an env that cannot render, or a success
key the env never reports is a `UsageError` before a run writes anything.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from cmil.errors import UsageError

GYM_PREFIX = "gym:"
SUCCESS_KEYS = ("success", "is_success")
DEFAULT_MAX_EPISODE_STEPS = 1000
MAX_STATE_DIM = 1024


def is_gym_task(name: str) -> bool:
    return name.startswith(GYM_PREFIX)


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """An RGB(A) frame (uint8, or float in [0, 1]) as (size, size, 3) uint8.

    Shrinking averages each output pixel's area of the input (PIL's box filter, as OpenCV's
    INTER_AREA), so thin objects fade instead of flickering in and out as nearest-neighbour or
    plain bilinear sampling would make them."""
    from PIL import Image

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise UsageError(f"the env's render() returned shape {frame.shape}, expected an (H, W, 3) RGB frame")
    if frame.dtype != np.uint8:
        frame = np.clip(np.asarray(frame, np.float64) * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255)
        frame = frame.round().astype(np.uint8)
    frame = np.ascontiguousarray(frame[..., :3])
    if frame.shape[:2] == (size, size):
        return frame
    shrink = frame.shape[0] >= size and frame.shape[1] >= size
    method = Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC
    return np.array(Image.fromarray(frame).resize((size, size), method), np.uint8)  # a writable copy


def to_unit(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An action within [low, high] -> [-1, 1] (float32, clipped); exact where the bounds are already +-1."""
    action = np.asarray(action, np.float64).reshape(low.shape)
    span = np.where(high > low, high - low, 1.0)
    unit = np.where((low == -1.0) & (high == 1.0), action, 2.0 * (action - low) / span - 1.0)
    return np.clip(unit, -1.0, 1.0).astype(np.float32)


def from_unit(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [low, high] (float64, clipped), the inverse of `to_unit`."""
    unit = np.clip(np.asarray(action, np.float64).reshape(low.shape), -1.0, 1.0)
    return np.where((low == -1.0) & (high == 1.0), unit, low + (unit + 1.0) * 0.5 * (high - low))


def _has_time_limit(env: gym.Env) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return True
        env = env.env
    return False


def _flat_state(space: gym.Space, obs: Any) -> np.ndarray | None:
    """The env's observation as a diagnostics vector, if it is a small numeric one (not, e.g., an image:
    every episode file would carry it)."""
    try:
        if gym.spaces.flatdim(space) > MAX_STATE_DIM:
            return None
        return np.asarray(gym.spaces.flatten(space, obs), np.float64)
    except Exception:  # e.g. a Text or Graph space: no diagnostics state then
        return None


def success_flag(value: Any, key: str) -> bool:
    flag = np.asarray(value, dtype=np.float64).ravel()
    if flag.size != 1:
        raise UsageError(f"success_key: info[{key!r}] is {value!r}, not a single number or bool")
    return bool(flag[0] > 0.5)


def check_action_repeat(value: Any) -> int:
    """`action_repeat` as an int >= 1 (a UsageError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"action_repeat must be a whole number >= 1, got {value!r}")
    return int(value)


class ActionRepeat(gym.Wrapper):
    """Holds each action for `repeat` of the wrapped env's steps: their rewards summed, the last step's
    observation and info returned, stopping early where the env ends the episode.

    Longer control steps let a pixel world model see what an action does: one Meta-World step moves the
    hand about an eighth of a pixel (docs/results.md, round 44); DreamerV2 holds actions for 2 steps on DMC.
    The frame is rendered by whoever wraps this (`PixelTask`), once per held action."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = check_action_repeat(repeat)

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class PixelTask(gym.Wrapper):
    """A rendering gymnasium env under cmil's env contract (see the module docstring)."""

    def __init__(self, env: gym.Env, image_size: int = 64, success_key: str | None = None,
                 max_episode_steps: int | None = None, name: str = "task", action_repeat: int = 1):
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise UsageError(f"task {name!r}: action space {space} is not a continuous Box; cmil's methods "
                             "need bounded continuous actions (a discrete one would need another policy head)")
        if len(space.shape) != 1:
            raise UsageError(f"task {name!r}: action space {space} is not a flat (1-D) Box")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise UsageError(f"task {name!r}: action space {space} is unbounded; cmil rescales actions to [-1, 1] "
                             "and needs finite bounds (wrap the env with gymnasium.wrappers.ClipAction to choose some)")
        if getattr(env, "render_mode", None) != "rgb_array":
            raise UsageError(f"task {name!r}: the env's render_mode is {getattr(env, 'render_mode', None)!r}; "
                             "cmil learns from pixels and needs an env built with render_mode='rgb_array'")
        if max_episode_steps is not None or not _has_time_limit(env):
            env = gym.wrappers.TimeLimit(env, max_episode_steps or DEFAULT_MAX_EPISODE_STEPS)
        if check_action_repeat(action_repeat) > 1:  # outside the limit: it counts the env's own steps
            env = ActionRepeat(env, action_repeat)
        super().__init__(env)
        self.name = name
        self.image_size = image_size
        self.native_action_space = space
        self._low = np.asarray(space.low, np.float64)
        self._high = np.asarray(space.high, np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.raw_obs: Any = None
        self.success_key, self.reports_success = self._probe(success_key)

    def _probe(self, success_key: str | None) -> tuple[str | None, bool]:
        """One reset, render and step: the env renders, and which info key carries success."""
        try:
            _, info = self.env.reset()
            frame = self.env.render()
        except gym.error.DependencyNotInstalled as exc:
            raise UsageError(f"task {self.name!r}: the env cannot render ({' '.join(str(exc).split())})") from None
        except AssertionError as exc:  # gymnasium's env checker, e.g. on an env without rgb_array rendering
            raise UsageError(f"task {self.name!r}: the env fails gymnasium's checks when it renders RGB frames "
                             f"({' '.join(str(exc).split())})") from None
        if not isinstance(frame, np.ndarray):
            raise UsageError(f"task {self.name!r}: the env cannot render: render() returned {type(frame).__name__}, "
                             "not an RGB array")
        resize_frame(frame, self.image_size)  # the frame's shape and type are usable
        _, _, _, _, step_info = self.env.step(self.to_native(np.zeros(self.action_space.shape, np.float32)))
        keys = set(info) | set(step_info)
        if success_key is not None:
            if success_key not in keys:
                raise UsageError(f"success_key: the env reports no info[{success_key!r}] (its info keys: "
                                 f"{', '.join(sorted(map(str, keys))) or 'none'})")
            return success_key, True
        found = next((k for k in SUCCESS_KEYS if k in keys), None)
        return found, found is not None

    # --- actions -------------------------------------------------------------------------------
    def to_native(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> the env's own action (clipped to its bounds)."""
        return from_unit(action, self._low, self._high).astype(self.native_action_space.dtype)

    def to_unit(self, action: np.ndarray) -> np.ndarray:
        """The env's own action -> [-1, 1] (float32, clipped)."""
        return to_unit(action, self._low, self._high)

    # --- the contract --------------------------------------------------------------------------
    def _frame_and_info(self, obs: Any, info: dict) -> tuple[np.ndarray, dict]:
        self.raw_obs = obs
        out = dict(info)
        out["success"] = (success_flag(info[self.success_key], self.success_key)
                          if self.reports_success and self.success_key in info else False)
        state = _flat_state(self.env.observation_space, obs)
        if state is not None:
            out["state"] = state
        return resize_frame(self.env.render(), self.image_size), out

    def close(self) -> None:
        """Free the GL resources of gymnasium's MuJoCo renderer in their own context, then close.

        Its `close` destroys the GL context but leaves the MjrContext to the garbage collector, which
        frees it later in whatever context is current then: that of the next env, whose frames turn
        black for good. Freeing it here, with its own context current, makes closed envs harmless."""
        renderer = getattr(self.env.unwrapped, "mujoco_renderer", None)
        for viewer in list(getattr(renderer, "_viewers", {}).values()):
            con = getattr(viewer, "con", None)
            if con is not None and hasattr(viewer, "make_context_current"):
                viewer.make_context_current()
                con.free()
        super().close()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._frame_and_info(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.to_native(action))
        frame, info = self._frame_and_info(obs, info)
        return frame, float(reward), bool(terminated), bool(truncated), info


def pixel_task(build, image_size: int, success_key: str | None, max_episode_steps: int | None,
               name: str, action_repeat: int | None = None) -> gym.Env:
    """`PixelTask` over the env `build()` makes, holding the process's renderer (`GuardedRender`:
    gymnasium's MuJoCo envs open GL contexts, which interfere when several are open)."""
    from cmil.envs.rendering import GuardedRender, RendererGuard

    if RendererGuard.busy():  # refuse before building: building may open a GL context already
        RendererGuard.claim(object())  # raises the guard's explanatory error
    env = build()
    try:
        return GuardedRender(PixelTask(env, image_size, success_key, max_episode_steps, name=name,
                                       action_repeat=1 if action_repeat is None else action_repeat))
    except BaseException:
        env.close()
        raise


def make_gym_env(task: str, seed: int | None = None, image_size: int = 64, env_kwargs: dict | None = None,
                 success_key: str | None = None, max_episode_steps: int | None = None,
                 action_repeat: int | None = None) -> gym.Env:
    """`gym:ID` (gymnasium's id, optionally 'module:ID' to import the module that registers it) as a
    `PixelTask`; gym.make's `max_episode_steps` replaces the env's registered limit. Construction
    errors of the user's making are UsageErrors."""
    env_id = task[len(GYM_PREFIX):]
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps

    def build() -> gym.Env:
        try:
            return gym.make(env_id, render_mode="rgb_array", **kwargs)
        except (gym.error.Error, ModuleNotFoundError) as exc:
            raise UsageError(f"task {task!r}: {' '.join(str(exc).split())}") from None
        except TypeError as exc:  # the constructor rejected a keyword argument
            raise UsageError(f"env_kwargs: {task!r} does not accept them ({exc})") from None

    return pixel_task(build, image_size, success_key, None, task, action_repeat)
