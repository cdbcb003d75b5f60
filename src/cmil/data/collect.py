"""Collecting expert demonstrations with a task's expert."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cmil.data.episodes import DEMO_STATS, EpisodeRecorder, save_episode
from cmil.envs import make_env, reports_success, task_slug
from cmil.errors import OutputExistsError, UsageError
from cmil.evaluate import run_episode
from cmil.experts import make_expert


def collect_demos(task: str, episodes: int, out: Path, seed: int = 0, image_size: int = 64,
                  keep_failures: bool = False, max_attempts: int | None = None, quiet: bool = False,
                  env_kwargs: dict[str, Any] | None = None, success_key: str | None = None,
                  max_episode_steps: int | None = None, action_repeat: int | None = None,
                  expert: str | Callable | None = None) -> dict:
    """Roll out the task's expert (or `expert`, a policy `obs -> action`, see `cmil.experts.policy`)
    until `episodes` episodes are saved in `out`.

    Only successful episodes are kept unless `keep_failures` (or the task has no success signal:
    then every episode is kept and the success rate is None); every attempt counts towards the
    expert's success rate, written with the other statistics to `out/expert_stats.json`.
    `env_kwargs`, `success_key`, `max_episode_steps` and `action_repeat` build the env as `cmil.envs.make_env`
    does.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: is not empty; choose another --out (nothing is overwritten)")
    max_attempts = max_attempts or 3 * episodes + 5
    # Collected beside `out` and renamed into place whole: an interrupted or failed collection leaves
    # no half-filled demo directory behind (the next attempt just starts again).
    partial = out.with_name(f".{out.name}.part")
    shutil.rmtree(partial, ignore_errors=True)
    env = make_env(task, seed=seed, image_size=image_size, env_kwargs=env_kwargs, success_key=success_key,
                   max_episode_steps=max_episode_steps, action_repeat=action_repeat)
    try:
        actor = make_expert(task, env, expert)
        scored = reports_success(env)
        keep_failures = keep_failures or not scored
        saved = attempts = successes = 0
        with tqdm(total=episodes, desc=f"demos {task}", unit="ep", disable=quiet, dynamic_ncols=True) as bar:
            while saved < episodes:
                if attempts >= max_attempts:
                    raise UsageError(f"the expert saved only {saved}/{episodes} successful episodes in {attempts} "
                                     "attempts; pass --keep-failures to keep failed ones too")
                recorder = EpisodeRecorder()
                rollout = run_episode(env, lambda _obs: actor.act(), actor.reset, seed=seed + attempts,
                                      recorder=recorder)
                attempts += 1
                successes += int(rollout.success)
                if rollout.success or keep_failures:
                    save_episode(partial, recorder.finish(),
                                 name=f"{task_slug(task)}-seed{seed + attempts - 1:06d}-{rollout.length}.npz")
                    saved += 1
                    bar.update(1)
                if scored:
                    bar.set_postfix(expert_success=f"{successes / attempts:.2f}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # a failed collection leaves nothing behind
        raise
    finally:
        env.close()
    stats = {"task": task, "episodes": saved, "attempts": attempts, "successes": successes if scored else None,
             "success_rate": successes / attempts if scored else None, "seed": seed, "image_size": image_size,
             "env_kwargs": env_kwargs or {}, "success_key": success_key, "max_episode_steps": max_episode_steps,
             "action_repeat": action_repeat}
    (partial / DEMO_STATS).write_text(json.dumps(stats, indent=2))
    if out.exists():
        out.rmdir()  # empty (checked above)
    partial.rename(out)
    return stats
