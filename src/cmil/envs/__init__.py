"""Environment layer: every task behind one `make_env(name, ...)`.

Contract of every env returned here (tests/test_envs.py checks it):
- observations are uint8 RGB images of shape (image_size, image_size, 3);
- actions are a float32 Box in [-1, 1];
- episodes have a fixed length (`TaskSpec.episode_length` steps, then `truncated=True`),
  unless the task ends early by design (`terminated=True`, e.g. a dropped ball);
- `info["success"]` (bool) is present after `reset` and on every `step`;
  `info["state"]` (float64 vector) carries simulator state for diagnostics only, never for agents.

Tasks register lazily so that importing cmil does not import MuJoCo.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym

from cmil.errors import UsageError

os.environ.setdefault("MUJOCO_GL", "egl")


@dataclass(frozen=True)
class TaskSpec:
    """What the rest of cmil needs to know about a task."""

    name: str
    env_factory: str
    """'module:function' building the env: f(seed=..., image_size=..., **kwargs) -> gym.Env."""
    episode_length: int
    description: str = ""


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> None:
    _TASKS[spec.name] = spec


def load_factory(path: str) -> Callable:
    """The object named by 'module:function' (imported on first use, so that cmil starts fast)."""
    module, fn = path.split(":")
    return getattr(importlib.import_module(module), fn)


class UnknownTaskError(UsageError, KeyError):
    """A task name that is not registered (a KeyError too, as a failed lookup)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def task_spec(name: str) -> TaskSpec:
    if name not in _TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    return sorted(_TASKS)


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


def make_env(name: str, seed: int | None = None, image_size: int = 64, **kwargs) -> gym.Env:
    """Build the task `name` (see `list_tasks()`); `seed` seeds the first `reset`."""
    spec = task_spec(name)
    env = load_factory(spec.env_factory)(seed=seed, image_size=image_size, **kwargs)
    return SeedFirstReset(env, seed)


# Built-in tasks. The default task's choice is justified in docs/default_task.md.
register(TaskSpec("point", "cmil.envs.point:make_point_env", 30,
                  "2-D point mass reaching a random goal, rendered with numpy; for fast tests"))
register(TaskSpec("kitchen", "cmil.envs.kitchen:make_kitchen_env", 280, "Franka Kitchen: microwave, kettle, light switch, slide cabinet (paper task)"))
register(TaskSpec("baoding", "cmil.envs.baoding:make_baoding_env", 75, "ShadowHand Baoding balls (paper task)"))

# Meta-World v3 tasks ("mw-push", ...); the module imports MuJoCo only when an env is built.
from cmil.envs.metaworld_env import metaworld_task_specs  # noqa: E402

for _spec in metaworld_task_specs():
    register(_spec)
