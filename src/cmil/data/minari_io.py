"""Minari datasets in and out (Farama's dataset format for gymnasium, `minari` 0.5.x).

Import (`cmil demos import --minari PATH_OR_ID`): a local dataset only (a dataset directory, its
`data/` folder, or an id under Minari's local root: `MINARI_DATASETS_PATH`, else ~/.minari/datasets);
nothing is downloaded. cmil learns from pixels, so the dataset must hold images: an image Box
observation space, or an image entry of a Dict space. A state-only dataset is refused (rendering
states would need the simulator in exactly the recorded state, which datasets do not generally
allow). Actions must be a bounded 1-D Box; they are rescaled to [-1, 1] as `PixelTask` does.
Minari's layout (T+1 observations, T actions / rewards / terminations / truncations, infos of
length T+1 when recorded) maps onto the episode format's T+1 rows with the zero first action.
Success is read from the infos' `success_key` (default `success`, else `is_success`).

Export (`cmil demos export DIR --minari NAME`): our episodes as a Minari dataset whose observations
are the frames and whose actions are cmil's [-1, 1] actions. Its env spec is that of cmil's pixel
env of the task (entry point `cmil.envs:make_env`, with the task's env options), so
`dataset.recover_environment()` rebuilds the env the episodes came from; images are stored losslessly.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from cmil.data.episodes import (
    DEMO_STATS,
    Episode,
    EpisodeError,
    demo_stats,
    episode_success,
    load_episodes,
    save_episode,
    validate_episode,
)
from cmil.envs.gym_task import SUCCESS_KEYS, resize_frame, to_unit
from cmil.errors import OutputExistsError, UsageError

IMAGE_KEYS = ("pixels", "image", "images", "rgb", "frame", "observation")


def minari_root() -> Path:
    """Minari's local dataset root (the same rule as `minari.storage.get_dataset_path`, without creating it)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def open_dataset(source: str):
    """A local MinariDataset from a dataset directory, its data/ folder, or an id under `minari_root()`."""
    from minari import MinariDataset

    path = Path(source)
    candidates = [path / "data", path] if path.exists() else [minari_root() / source / "data"]
    for data in candidates:
        if (data / "metadata.json").is_file():
            try:
                return MinariDataset(data)
            except (ValueError, OSError, KeyError) as exc:
                raise UsageError(f"{source}: cannot read the Minari dataset ({' '.join(str(exc).split())})") from None
    where = path if path.exists() else minari_root() / source
    raise UsageError(f"{source}: no local Minari dataset at {where} (cmil never downloads; fetch it first with "
                     f"`minari download {source}`, or give the dataset's directory)")


def _is_image(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] in (3, 4))


def image_key(space: gym.Space, key: str | None, source: str) -> str | None:
    """Where the images are: None for an image observation space, else the key of a Dict space."""
    if key is None and _is_image(space):
        return None
    if isinstance(space, gym.spaces.Dict):
        images = [k for k, s in space.spaces.items() if _is_image(s)]
        if key is not None:
            if key not in images:
                raise UsageError(f"{source}: --image-key {key!r} is not an image entry of the observations "
                                 f"(image entries: {images or 'none'})")
            return key
        if len(images) == 1:
            return images[0]
        preferred = [k for k in IMAGE_KEYS if k in images]
        if preferred:
            return preferred[0]
    raise UsageError(f"{source}: the dataset has no image observations (observation space {space}); cmil learns "
                     "from pixels and does not render recorded states. Record the dataset with image observations "
                     "(e.g. gymnasium.wrappers.AddRenderObservation under minari.DataCollector)")


def _action_bounds(space: gym.Space, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise UsageError(f"{source}: action space {space} is not a flat continuous Box, which every method needs")
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise UsageError(f"{source}: action space {space} is unbounded; cmil needs bounds to rescale to [-1, 1]")
    return low, high


def _success(infos: dict[str, Any], key: str | None, rows: int) -> np.ndarray | None:
    names = [key] if key is not None else [k for k in SUCCESS_KEYS if k in infos]
    if not names or names[0] not in infos:
        return None
    flags = np.asarray(infos[names[0]], np.float64).reshape(len(infos[names[0]]), -1)[:, 0] > 0.5
    if len(flags) == rows - 1:  # infos of the steps only
        flags = np.concatenate([[False], flags])
    return flags if len(flags) == rows else None


def convert_minari_episode(ep, where: str, key: str | None, low: np.ndarray, high: np.ndarray,
                           image_size: int, success_key: str | None) -> tuple[Episode, bool]:
    """One Minari EpisodeData -> (a validated cmil episode, whether success was recorded)."""
    frames = ep.observations if key is None else ep.observations[key]
    frames = np.stack([resize_frame(f, image_size) for f in np.asarray(frames)])
    steps = len(ep.rewards)
    if len(frames) != steps + 1:
        raise EpisodeError(f"{where}: {len(frames)} observations for {steps} steps, expected {steps + 1}")
    unit = np.stack([to_unit(a, low, high) for a in np.asarray(ep.actions).reshape(steps, -1)])
    rows = steps + 1
    success = _success(ep.infos or {}, success_key, rows)
    out: Episode = {
        "image": frames,
        "action": np.concatenate([np.zeros((1, unit.shape[1]), np.float32), unit]),
        "reward": np.concatenate([[0.0], np.asarray(ep.rewards, np.float64)]).astype(np.float32),
        "success": success if success is not None else np.zeros(rows, bool),
        "is_first": np.arange(rows) == 0,
        "is_last": np.arange(rows) == rows - 1,
        "is_terminal": (np.arange(rows) == rows - 1) & bool(np.asarray(ep.terminations)[-1]),
    }
    validate_episode(out, where, image_size=image_size)
    return out, success is not None


def import_minari(source: str, out: str | Path, image_size: int = 64, image_key_name: str | None = None,
                  success_key: str | None = None, action_dim: int | None = None) -> list[Path]:
    """Convert every episode of the local Minari dataset `source` into `out`; all checked before any write."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: exists and is not an empty directory; choose another --out (nothing is overwritten)")
    dataset = open_dataset(source)
    key = image_key(dataset.observation_space, image_key_name, source)
    low, high = _action_bounds(dataset.action_space, source)
    if action_dim is not None and len(low) != action_dim:
        raise EpisodeError(f"{source}: action dimension is {len(low)}, expected {action_dim}")
    converted = [convert_minari_episode(ep, f"{source} episode {ep.id}", key, low, high, image_size, success_key)
                 for ep in dataset.iterate_episodes()]
    if not converted:
        raise EpisodeError(f"{source}: the dataset has no episodes")
    paths = [save_episode(out, ep, name=f"minari-{i:06d}-{len(ep['action']) - 1}.npz")
             for i, (ep, _) in enumerate(converted)]
    scored = all(has for _, has in converted)
    source_info = {"source": f"minari:{dataset.spec.dataset_id}", "episodes": len(paths),
                   "env_spec": dataset.env_spec.id if dataset.env_spec is not None else None,
                   # the demonstrator's success rate, if the dataset records success (else unknown)
                   "success_rate": float(np.mean([episode_success(e) for e, _ in converted])) if scored else None}
    (out / DEMO_STATS).write_text(json.dumps(source_info, indent=2))
    return paths


# --- export --------------------------------------------------------------------------------------

class _SpecOnly(gym.Env):
    """Carries an env spec and the spaces to `minari.create_dataset_from_buffers` without building the env."""

    def __init__(self, spec: gym.envs.registration.EnvSpec | None, observation_space, action_space):
        self.spec, self.observation_space, self.action_space = spec, observation_space, action_space


def pixel_env_spec(task: str, options: dict[str, Any]) -> gym.envs.registration.EnvSpec:
    """The gymnasium spec of cmil's pixel env of `task` (gym.make(spec) builds it with `cmil.envs.make_env`)."""
    from cmil.envs import task_slug

    kwargs = {"name": task, **{k: v for k, v in options.items() if v not in (None, {})}}
    return gym.envs.registration.EnvSpec(id=f"cmil/{task_slug(task)}-v0", entry_point="cmil.envs:make_env",
                                         kwargs=kwargs, disable_env_checker=True)


def export_minari(demos: str | Path, dataset_id: str, task: str | None = None,
                  options: dict[str, Any] | None = None, root: str | Path | None = None):
    """Write the episodes in `demos` as the Minari dataset `dataset_id` (under `root`, default
    `minari_root()`); `task` and `options` (default: from the demos' expert_stats.json) give its env spec."""
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise UsageError(f"--minari: {exc}") from None
    root = Path(root) if root is not None else minari_root()
    if (root / dataset_id).exists():
        raise OutputExistsError(f"{root / dataset_id}: a Minari dataset {dataset_id!r} exists; choose another name "
                                "(nothing is overwritten)")
    episodes = load_episodes(demos)
    stats = demo_stats(demos) or {}
    task = task or stats.get("task")
    if options is None:
        options = {"image_size": int(episodes[0]["image"].shape[1]),
                   **{k: stats[k] for k in ("env_kwargs", "success_key", "max_episode_steps", "action_repeat") if k in stats}}
    size, action_dim = episodes[0]["image"].shape[1], episodes[0]["action"].shape[1]
    observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    spec = pixel_env_spec(task, options) if task else None
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, observations=ep["image"], actions=ep["action"][1:],
                             rewards=ep["reward"][1:].astype(np.float64).tolist(),
                             terminations=[False] * (len(ep["action"]) - 2) + [bool(ep["is_terminal"][-1])],
                             truncations=[False] * (len(ep["action"]) - 2) + [not bool(ep["is_terminal"][-1])],
                             infos={"success": ep["success"]})
               for i, ep in enumerate(episodes)]
    lossless = ({"jpeg_encoding": False}
                if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters else {})
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():  # Minari warns about every metadata field left out
            warnings.simplefilter("ignore")
            return minari.create_dataset_from_buffers(
                dataset_id, buffers, env=_SpecOnly(spec, observation_space, action_space),
                algorithm_name=f"cmil demos ({stats.get('source', 'expert')})", description=(
                    f"cmil episodes of {task or 'an unknown task'}: {size}x{size} RGB frames as observations, "
                    "actions rescaled to [-1, 1]; infos['success'] is the task's success flag"),
                **lossless)
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
