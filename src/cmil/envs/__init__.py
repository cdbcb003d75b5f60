"""Environment layer: every task behind one `make_env(name, ...)`.

Contract of every env returned here (tests/test_envs.py checks it):
- observations are uint8 RGB images of shape (image_size, image_size, 3);
- actions are a float32 Box in [-1, 1];
- episodes have a fixed length (`TaskSpec.episode_length` steps, then `truncated=True`),
  unless the task ends early by design (`terminated=True`, e.g. a dropped ball);
- `info["success"]` (bool) is present after `reset` and on every `step`; an env whose task has no
  success signal says so with an attribute `reports_success = False` (`reports_success(env)`), and
  cmil then reports returns only;
  `info["state"]` (float64 vector) carries simulator state for diagnostics only, never for agents.

Besides the registered tasks, any gymnasium env is a task by its id, `gym:ID` (`gym_task.py`), and
`register_task` makes one from an env factory (the Python API, `cmil.api`).

Tasks register lazily so that importing cmil does not import MuJoCo.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from cmil.envs.gym_task import GYM_PREFIX, is_gym_task, make_gym_env, pixel_task
from cmil.errors import UsageError

os.environ.setdefault("MUJOCO_GL", "egl")


@dataclass(frozen=True)
class TaskSpec:
    """What the rest of cmil needs to know about a task."""

    name: str
    env_factory: str | Callable[..., gym.Env]
    """'module:function' (or the function) building the env: f(seed=..., image_size=..., **kwargs) -> gym.Env."""
    episode_length: int | None
    """Fixed episode length (None: the env's own episode ends)."""
    description: str = ""
    expert_success: tuple[int, int] | None = None
    """(successes, episodes) of the task's expert as measured (docs/), for `cmil tasks`."""
    takes_task_options: bool = False
    """The factory takes `success_key` and `max_episode_steps` (tasks made from gymnasium envs)."""


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> None:
    _TASKS[spec.name] = spec


def load_factory(path: str | Callable) -> Callable:
    """The object named by 'module:function' or 'path/to/file.py:function' (imported on first use, so
    that cmil starts fast); a callable is returned as it is."""
    if callable(path):
        return path
    module, sep, fn = path.rpartition(":")
    if not sep or not module or not fn:
        raise UsageError(f"{path!r}: expected 'module:function' or 'path/to/file.py:function'")
    try:
        if module.endswith(".py"):
            file = Path(module).resolve()
            name = f"cmil_user_{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}"
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or not file.is_file():
                raise ModuleNotFoundError(f"no file {file}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
        return getattr(mod, fn)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise UsageError(f"{path!r}: cannot load it ({exc})") from None


class UnknownTaskError(UsageError, KeyError):
    """A task name that is not registered (a KeyError too, as a failed lookup)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def task_spec(name: str) -> TaskSpec:
    if is_gym_task(name):
        return TaskSpec(name, functools.partial(make_gym_env, name), None, "a gymnasium env by its id",
                        takes_task_options=True)
    if name not in _TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}, or "
                               f"{GYM_PREFIX}ID for any gymnasium env (tasks registered from Python with "
                               "cmil.register_task exist only in the process that registered them)")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """The registered tasks (`gym:ID` tasks are not listed: any gymnasium id is one)."""
    return sorted(_TASKS)


def task_slug(name: str) -> str:
    """`name` as a file name ('gym:ns/Env-v0' -> 'gym-ns-Env-v0'), for run and demo directories."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-") or "task"


def reports_success(env: gym.Env) -> bool:
    """Whether the task has a success signal (tasks from gymnasium envs may have none)."""
    try:
        return bool(env.get_wrapper_attr("reports_success"))
    except AttributeError:
        return True


class SeedFirstReset(gym.Wrapper):
    """Applies `make_env`'s seed to the first `reset()` that is not given one, so that
    `make_env(name, seed=s).reset()` is reproducible and later resets continue that random stream."""

    def __init__(self, env: gym.Env, seed: int | None):
        super().__init__(env)
        self._pending_seed = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def make_env(name: str, seed: int | None = None, image_size: int = 64, env_kwargs: dict[str, Any] | None = None,
             success_key: str | None = None, max_episode_steps: int | None = None, action_repeat: int | None = None,
             **kwargs) -> gym.Env:
    """Build the task `name` (see `list_tasks()`, or `gym:ID`); `seed` seeds the first `reset`.

    `env_kwargs` (and `kwargs`) go to the task's env factory (`gym.make` for `gym:ID`);
    `success_key`, `max_episode_steps` and `action_repeat` apply to tasks made from gymnasium envs
    (`gym_task.py`); Meta-World tasks take `action_repeat` too (their own, no intermediate frames)."""
    spec = task_spec(name)
    options: dict[str, Any] = {**(env_kwargs or {}), **kwargs}
    task_options = {k: v for k, v in (("success_key", success_key), ("max_episode_steps", max_episode_steps),
                                      ("action_repeat", action_repeat)) if v is not None}
    if spec.takes_task_options:
        options = {"env_kwargs": options, **task_options}
    else:  # a built-in factory may take them as its own arguments (baoding takes max_episode_steps)
        twice = sorted(set(options) & set(task_options))
        if twice:
            raise UsageError(f"{', '.join(twice)}: given both as a task option and in env_kwargs; give it once")
        options.update(task_options)
    try:
        env = load_factory(spec.env_factory)(seed=seed, image_size=image_size, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):  # an option the factory does not take
            names = ", ".join(sorted(task_options)) or "env_kwargs"
            raise UsageError(f"{names}: task {name!r} does not take them ({exc}); success_key, max_episode_steps "
                             f"and action_repeat are for {GYM_PREFIX}ID tasks and tasks registered from Python "
                             "(Meta-World tasks take action_repeat too)") from None
        raise
    return SeedFirstReset(env, seed)


def effective_env_options(name: str, env_kwargs: dict[str, Any] | None,
                          action_repeat: int | None) -> tuple[dict[str, Any], int]:
    """The env kwargs and the action repeat that `make_env` builds task `name` with, in one spelling: a built-in
    factory takes `action_repeat` as a task option or as an env kwarg alike (Meta-World's `{"action_repeat": 4}` is
    `action_repeat=4`), so there the kwarg is moved into the repeat; a gymnasium task's env kwargs go to its env
    untouched."""
    kwargs = dict(env_kwargs or {})
    held = kwargs.pop("action_repeat") if "action_repeat" in kwargs and not task_spec(name).takes_task_options else None
    return kwargs, int(action_repeat or held or 1)


def register_task(name: str, env_factory: Callable[..., gym.Env], description: str = "",
                  success_key: str | None = None, max_episode_steps: int | None = None) -> TaskSpec:
    """Register the task `name` made from `env_factory(**env_kwargs) -> gym.Env`, an env built with
    render_mode="rgb_array" (see `gym_task.PixelTask` for what cmil makes of it). `success_key` and
    `max_episode_steps` are the task's defaults; a run's own values replace them."""
    if not name or is_gym_task(name) or task_slug(name) != name:
        raise UsageError(f"task name {name!r}: use letters, digits and . _ - only (and not the prefix {GYM_PREFIX})")

    default_key, default_cap = success_key, max_episode_steps

    def factory(seed: int | None = None, image_size: int = 64, env_kwargs: dict | None = None,
                success_key: str | None = None, max_episode_steps: int | None = None,
                action_repeat: int | None = None) -> gym.Env:
        def build() -> gym.Env:
            return env_factory(**(env_kwargs or {}))

        return pixel_task(build, image_size, success_key if success_key is not None else default_key,
                          max_episode_steps if max_episode_steps is not None else default_cap, name, action_repeat)

    spec = TaskSpec(name, factory, max_episode_steps, description or f"registered from Python ({env_factory!r})",
                    takes_task_options=True)
    register(spec)
    return spec


# Built-in tasks. The default task's choice is justified in docs/default_task.md.
register(TaskSpec("point", "cmil.envs.point:make_point_env", 30,
                  "2-D point mass reaching a random goal, rendered with numpy; for fast tests"))
# Expert successes as measured in docs/kitchen.md (seeds 0-19) and docs/baoding.md (30 episodes).
register(TaskSpec("kitchen", "cmil.envs.kitchen:make_kitchen_env", 280,
                  "Franka Kitchen: microwave, kettle, light switch, slide cabinet (paper task)", expert_success=(20, 20)))
register(TaskSpec("baoding", "cmil.envs.baoding:make_baoding_env", 75, "ShadowHand Baoding balls (paper task)",
                  expert_success=(28, 30)))

# Meta-World v3 tasks ("mw-push", ...); the module imports MuJoCo only when an env is built.
from cmil.envs.metaworld_env import metaworld_task_specs  # noqa: E402

for _spec in metaworld_task_specs():
    register(_spec)
