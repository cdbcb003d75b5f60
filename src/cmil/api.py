"""The Python API: bring your own task and demos, train any method, evaluate a run, act with its policy.

    import cmil
    cmil.register_task("my-task", make_my_env, expert=my_policy)    # or use "gym:ID" directly
    cmil.collect_demos("my-task", episodes=10, out="demos/my-task")
    result = cmil.train_policy("my-task", method="bc", demos="demos/my-task", run_dir="runs/my-bc")
    metrics = cmil.evaluate_run("runs/my-bc", episodes=10)
    policy = cmil.load_policy("runs/my-bc")
    action = policy.act(frame)            # frame: the env's render(), action: in the env's own units

These are thin layers over what the command line runs (`cmil.launch`, `cmil.data.collect`), with the
same checks: a mistake is a `cmil.errors.UsageError` naming it. (`train_policy` and `evaluate_run`
are not called `train` / `evaluate` because `cmil.train` and `cmil.evaluate` are modules.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from cmil.errors import UsageError


def register_task(name: str, env_factory: Callable[..., gym.Env], expert: Callable[[Any], Any] | None = None,
                  *, success_key: str | None = None, max_episode_steps: int | None = None,
                  description: str = "") -> None:
    """Make `name` a task of this process (`cmil.envs.register_task`).

    `env_factory(**env_kwargs)` returns a gymnasium env built with render_mode="rgb_array"; cmil
    learns from its rendered frames (see `cmil.envs.gym_task.PixelTask`). `expert(obs) -> action`,
    if given, is the task's demonstrator, reading the env's own observation and returning the env's
    own action (it may have a `reset()`). A run of the task saved its name only: to resume or evaluate
    it in another process, register the task there first.
    """
    from cmil.envs import register_task as register_env
    from cmil.experts import register_expert

    register_env(name, env_factory, description, success_key, max_episode_steps)
    if expert is not None:
        register_expert(name, expert)


def collect_demos(task: str, episodes: int, out: str | Path, *, expert: Callable[[Any], Any] | str | None = None,
                  seed: int = 1_000_000, keep_failures: bool = False, image_size: int = 64,
                  env_kwargs: dict[str, Any] | None = None, success_key: str | None = None,
                  max_episode_steps: int | None = None, action_repeat: int | None = None,
                  quiet: bool = True) -> dict[str, Any]:
    """Roll out `expert` (default: the task's) for `episodes` episodes into `out`; returns its statistics."""
    from cmil.data.collect import collect_demos as collect

    return collect(task, episodes, Path(out), seed=seed, image_size=image_size, keep_failures=keep_failures,
                   quiet=quiet, env_kwargs=env_kwargs, success_key=success_key,
                   max_episode_steps=max_episode_steps, action_repeat=action_repeat, expert=expert)


def make_config(task: str, method: str = "cmil", preset: str = "default", **settings: Any):
    """The run's Config: `preset` (shrunk for `dry_run=True`), then `settings` (Config fields; groups by
    dotted names, e.g. `**{"bc.steps": 500}`; `env_kwargs` may be a dict), then the method's implied
    settings, exactly as `cmil train --preset P --task T --method M --field value` resolves them."""
    from cmil.config import Config, replace
    from cmil.config_io import flatten
    from cmil.launch import dry_run_preset
    from cmil.presets import PRESETS, apply_method

    if preset not in PRESETS:
        raise UsageError(f"preset: unknown preset {preset!r} (one of {', '.join(sorted(PRESETS))})")
    base = dry_run_preset(PRESETS[preset]) if settings.get("dry_run") else PRESETS[preset]
    if isinstance(settings.get("env_kwargs"), dict):
        settings["env_kwargs"] = json.dumps(settings["env_kwargs"])
    known = set(flatten(base)) | {f.name for f in fields(Config)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"unknown config fields {unknown} (see `cmil train --help`)")
    return apply_method(replace(base, task=task, method=method, **settings), explicit=settings)


def train_policy(task: str, method: str = "cmil", *, preset: str = "default", quiet: bool = True,
                 **settings: Any) -> dict[str, Any]:
    """Train (or resume, or report the finished) run of `method` on `task`; returns final.json's result
    with `run_dir` added. `settings` are Config fields (see `make_config`), e.g. demos=..., run_dir=...,
    env_steps=..., dry_run=True."""
    from cmil.launch import launch, plan_run

    plan = plan_run(make_config(task, method, preset, **settings))
    return {**launch(plan, quiet), "run_dir": str(plan.run_dir)}


def evaluate_run(run_dir: str | Path, episodes: int = 20, *, seed: int = 20_000, deterministic: bool = True,
                 video_episodes: int = 0) -> dict[str, float]:
    """`cmil eval RUN`: the run's latest policy over `episodes` seeded episodes (results in RUN/eval/)."""
    from cmil.launch import evaluate_run as run_eval

    return run_eval(Path(run_dir), episodes, seed, deterministic, video_episodes)


class LoadedPolicy:
    """A trained run's policy, acting on frames in the env's own action units.

    `act(frame)` takes any (H, W, 3) RGB frame (resized to the run's image size as cmil's envs do) and
    returns the action for the env the run was trained on (rescaled from [-1, 1] to its bounds).
    Recurrent policies (CMIL, VMAIL) remember the episode so far: call `reset()` at every episode start.
    """

    def __init__(self, policy, image_size: int, to_native: Callable[[np.ndarray], np.ndarray] | None,
                 task: str, method: str, checkpoint: Path):
        self._policy, self._to_native = policy, to_native
        self.image_size, self.task, self.method, self.checkpoint = image_size, task, method, checkpoint

    def reset(self) -> None:
        self._policy.reset()

    def act(self, frame: np.ndarray, deterministic: bool = True) -> np.ndarray:
        from cmil.envs.gym_task import resize_frame

        action = self._policy.act(resize_frame(frame, self.image_size), deterministic)
        return action if self._to_native is None else self._to_native(action)

    def __repr__(self) -> str:
        return f"LoadedPolicy({self.method} on {self.task}, {self.checkpoint})"


def load_policy(run_dir: str | Path) -> LoadedPolicy:
    """The policy of the run in `run_dir` (its latest checkpoint); reads the run, writes nothing."""
    from cmil.launch import open_policy

    parts = open_policy(Path(run_dir).resolve())
    try:
        to_native = parts.env.get_wrapper_attr("to_native")
    except AttributeError:  # a built-in task: its actions are already the env's own
        to_native = None
    finally:
        parts.env.close()
    parts.policy.reset()
    return LoadedPolicy(parts.policy, parts.cfg.image_size, to_native, parts.cfg.task, parts.cfg.method,
                        parts.checkpoint)
