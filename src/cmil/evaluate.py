"""Policy evaluation over N episodes: success rate, return, length, task counts, videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from cmil.data.episodes import EpisodeRecorder, episode_success


class Rollout(NamedTuple):
    """One episode: whether the task's success flag ever held, return, steps, last info, frames."""

    success: bool
    ret: float
    length: int
    info: dict[str, Any]
    frames: list[np.ndarray]


def run_episode(env: gym.Env, act, reset, seed: int | None = None,
                recorder: EpisodeRecorder | None = None) -> Rollout:
    """Roll out one episode with `act(obs) -> action`."""
    obs, info = env.reset(seed=seed)
    reset()
    frames = [obs]
    if recorder is not None:
        recorder.reset(obs, info)
    total, steps, success = 0.0, 0, bool(info.get("success", False))
    while True:
        action = act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        success = success or bool(info.get("success", False))
        frames.append(obs)
        if recorder is not None:
            recorder.step(action, obs, reward, info, terminated)
        if terminated or truncated:
            return Rollout(success, total, steps, info, frames)


def recorded_rollouts(env: gym.Env, act, reset, seeds) -> list[dict]:
    """One recorded episode (EpisodeRecorder's dict: images, actions, rewards, states) per seed, with `act(obs)`."""
    episodes = []
    for seed in seeds:
        recorder = EpisodeRecorder()
        run_episode(env, act, reset, seed=seed, recorder=recorder)
        episodes.append(recorder.finish())
    return episodes


def evaluate(env: gym.Env, policy, episodes: int, deterministic: bool = True, seed: int = 10_000,
             video_dir: Path | None = None, video_episodes: int = 0, video_name: str = "eval",
             per_episode: list[dict] | None = None) -> dict[str, float]:
    """Evaluate `policy` for `episodes` episodes seeded seed, seed+1, ... (the same placements every
    evaluation, so curves compare like with like). Success = the task's flag held at any step; a task
    without a success signal (`reports_success`) gets no `eval/success_rate`. `per_episode`, when given, receives
    one {'seed', 'success', 'return', 'length'} per episode (so two policies compare placement by placement)."""
    from cmil.envs import reports_success

    results = []
    for i in range(episodes):
        r = run_episode(env, lambda o: policy.act(o, deterministic), policy.reset, seed=seed + i)
        results.append((r.success, r.ret, r.length, r.info.get("tasks_completed")))
        if per_episode is not None:
            per_episode.append({"seed": seed + i, "success": bool(r.success), "return": float(r.ret), "length": r.length})
        if video_dir is not None and i < video_episodes:
            save_video(video_dir / f"{video_name}_ep{i}.mp4", r.frames)
    succ, rets, lens, tasks = zip(*results, strict=True)
    out = {"eval/success_rate": float(np.mean(succ)), "eval/return": float(np.mean(rets)),
           "eval/length": float(np.mean(lens)), "eval/episodes": float(episodes)}
    if not reports_success(env):
        del out["eval/success_rate"]
    if all(t is not None for t in tasks):
        out["eval/tasks_completed"] = float(np.mean(tasks))
    return out


def save_video(path: Path, frames: list[np.ndarray], fps: int = 20, scale: int = 4) -> None:
    """mp4 of the frames, upscaled by `scale` (nearest) so 64x64 frames are watchable."""
    import imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    big = [np.kron(f, np.ones((scale, scale, 1), np.uint8)) for f in frames]
    imageio.mimsave(path, big, fps=fps, macro_block_size=1)


def demo_success_rate(episodes) -> float:
    return float(np.mean([episode_success(ep) for ep in episodes]))
