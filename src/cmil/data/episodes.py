"""The on-disk episode format, its validation, and an episode recorder.

One episode is one compressed `.npz` file named `{timestamp}-{uuid}-{length}.npz` (the layout of
DreamerV2's episodes, so the paper's demos and ours read alike). With T environment steps it holds
T + 1 rows, row 0 being the frame after `reset`:

| key           | shape            | dtype   | meaning                                                    |
|---------------|------------------|---------|------------------------------------------------------------|
| `image`       | (T+1, H, W, 3)   | uint8   | what the agent sees                                        |
| `action`      | (T+1, A)         | float32 | `action[t]` is the action that *led to* `image[t]`;        |
|               |                  |         | `action[0]` is zeros. So the action taken at frame t is    |
|               |                  |         | `action[t+1]` (DreamerV2's convention).                   |
| `reward`      | (T+1,)           | float32 | the task's oracle reward for diagnostics; never trained on |
| `success`     | (T+1,)           | bool    | the task's success flag at frame t                         |
| `is_first`    | (T+1,)           | bool    | True only at row 0                                         |
| `is_last`     | (T+1,)           | bool    | True only at row T                                         |
| `is_terminal` | (T+1,)           | bool    | True where the episode ended by termination (not time-out) |
| `state`       | (T+1, S)         | float32 | optional: simulator state, for diagnostics only            |

Every load validates: a problem raises `EpisodeError` whose one-line message names the file.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cmil.errors import UsageError
from cmil.fileio import atomic_write_bytes

Episode = dict[str, np.ndarray]

REQUIRED_KEYS = ("image", "action", "reward", "success", "is_first", "is_last", "is_terminal")
FLAG_KEYS = ("success", "is_first", "is_last", "is_terminal")
DEMO_STATS = "expert_stats.json"  # beside a demo set's episodes: how it was collected (`cmil demos collect`)


def demo_stats(directory: str | os.PathLike) -> dict | None:
    """A demo directory's DEMO_STATS file as a dict (task, env kwargs, the expert's success rate, ...); None
    when it has none (demos converted from elsewhere, or written by hand)."""
    path = Path(directory) / DEMO_STATS
    return json.loads(path.read_text()) if path.is_file() else None


class EpisodeError(UsageError, ValueError):
    """A malformed, truncated or mismatched episode file; the message names the file and the problem."""


def episode_length(ep: Episode) -> int:
    """Number of environment steps (rows minus one)."""
    return len(ep["action"]) - 1


def episode_success(ep: Episode) -> bool:
    """An episode succeeds if the task's success flag held at any frame."""
    return bool(np.any(ep["success"]))


def validate_episode(ep: Episode, where: str, image_size: int | None = None,
                     action_dim: int | None = None) -> None:
    """Raise EpisodeError naming `where` if `ep` breaks the format (or the expected sizes)."""

    def fail(problem: str) -> None:
        raise EpisodeError(f"{where}: {problem}")

    missing = [k for k in REQUIRED_KEYS if k not in ep]
    if missing:
        fail(f"missing keys {missing}")
    img, act = ep["image"], ep["action"]
    if img.dtype != np.uint8:
        fail(f"image dtype is {img.dtype}, expected uint8")
    if img.ndim != 4 or img.shape[-1] != 3 or img.shape[1] != img.shape[2]:
        fail(f"image shape is {img.shape}, expected (T+1, H, H, 3)")
    if image_size is not None and img.shape[1] != image_size:
        fail(f"image size is {img.shape[1]}x{img.shape[2]}, expected {image_size}x{image_size}")
    if act.ndim != 2 or not np.issubdtype(act.dtype, np.floating):
        fail(f"action has shape {act.shape} and dtype {act.dtype}, expected float (T+1, A)")
    if action_dim is not None and act.shape[1] != action_dim:
        fail(f"action dimension is {act.shape[1]}, expected {action_dim}")
    rows = len(act)
    if rows < 2:
        fail(f"episode has {rows} rows, expected at least 2 (reset frame + one step)")
    for key in REQUIRED_KEYS:
        if len(ep[key]) != rows:
            fail(f"{key} has {len(ep[key])} rows but action has {rows} (truncated file?)")
    if "state" in ep and (ep["state"].ndim != 2 or len(ep["state"]) != rows):
        fail(f"state has shape {ep['state'].shape}, expected ({rows}, S)")
    for key in ("action", "reward") + (("state",) if "state" in ep else ()):
        if not np.all(np.isfinite(ep[key])):
            fail(f"{key} has non-finite values")
    if np.abs(act).max() > 1.0 + 1e-5:
        fail(f"actions leave [-1, 1] (max |a| = {np.abs(act).max():.3f})")
    for key in FLAG_KEYS:
        if ep[key].dtype != np.bool_:
            fail(f"{key} dtype is {ep[key].dtype}, expected bool")
    if not ep["is_first"][0] or ep["is_first"][1:].any():
        fail("is_first must be True at row 0 only")
    if not ep["is_last"][-1] or ep["is_last"][:-1].any():
        fail("is_last must be True at the last row only")
    if ep["is_terminal"][:-1].any():
        fail("is_terminal is set before the last row")


def load_episode(path: str | os.PathLike, image_size: int | None = None,
                 action_dim: int | None = None) -> Episode:
    """Load and validate one episode file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            ep = {k: data[k] for k in data.files}
    except Exception as exc:  # zip/npz corruption surfaces as many exception types
        raise EpisodeError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    validate_episode(ep, str(path), image_size, action_dim)
    return ep


def episode_paths(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise EpisodeError(f"{directory}: not a directory")
    paths = sorted(directory.glob("*.npz"))
    if not paths:
        raise EpisodeError(f"{directory}: no episode files (*.npz)")
    return paths


def load_episodes(directory: str | os.PathLike, image_size: int | None = None,
                  action_dim: int | None = None, limit: int | None = None) -> list[Episode]:
    """Load and validate every episode in `directory` (sorted by name); all or nothing."""
    paths = episode_paths(directory)[:limit]
    episodes = [load_episode(p, image_size, action_dim) for p in paths]
    dims = {ep["action"].shape[1] for ep in episodes}
    sizes = {ep["image"].shape[1] for ep in episodes}
    if len(dims) > 1 or len(sizes) > 1:
        raise EpisodeError(f"{directory}: episodes disagree (action dims {sorted(dims)}, image sizes {sorted(sizes)})")
    return episodes


def episode_filename(ep: Episode) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex}-{episode_length(ep)}.npz"


def save_episode(directory: str | os.PathLike, ep: Episode, name: str | None = None) -> Path:
    """Validate and write `ep` atomically (temporary file, then rename); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or episode_filename(ep))
    validate_episode(ep, str(path))
    # The temporary file is hidden and does not end in .npz: it never passes for an episode.
    atomic_write_bytes(path, lambda f: np.savez_compressed(f, **ep))
    return path


class EpisodeRecorder:
    """Accumulates one episode from `reset` and `step` results into the on-disk format."""

    def __init__(self, record_state: bool = True):
        self.record_state = record_state
        self.rows: dict[str, list] = {}

    def reset(self, obs: np.ndarray, info: dict) -> None:
        self.rows = {k: [] for k in REQUIRED_KEYS}
        self._action_dim: int | None = None
        self._add(obs, None, 0.0, info, terminal=False)

    def step(self, action: np.ndarray, obs: np.ndarray, reward: float, info: dict, terminated: bool) -> None:
        self._add(obs, np.asarray(action, np.float32), reward, info, terminal=terminated)

    def _add(self, obs, action, reward, info, terminal) -> None:
        rows = self.rows
        rows["image"].append(np.asarray(obs, np.uint8))
        rows["action"].append(action)
        rows["reward"].append(float(reward))
        rows["success"].append(bool(info.get("success", False)))
        rows["is_first"].append(action is None)
        rows["is_last"].append(False)
        rows["is_terminal"].append(bool(terminal))
        if self.record_state and "state" in info:
            rows.setdefault("state", []).append(np.asarray(info["state"], np.float32))

    def finish(self) -> Episode:
        """The recorded episode (the last row is marked `is_last`)."""
        rows = self.rows
        action_dim = next(a.shape[0] for a in rows["action"] if a is not None)
        actions = [np.zeros(action_dim, np.float32) if a is None else a for a in rows["action"]]
        ep: Episode = {
            "image": np.stack(rows["image"]),
            "action": np.stack(actions).astype(np.float32),
            "reward": np.asarray(rows["reward"], np.float32),
        }
        for key in FLAG_KEYS:
            ep[key] = np.asarray(rows[key], bool)
        ep["is_last"][-1] = True
        if "state" in rows and len(rows["state"]) == len(actions):
            ep["state"] = np.stack(rows["state"])
        return ep


def summarize(episodes: Iterable[Episode]) -> dict:
    """Counts, lengths, success and action ranges of a list of episodes."""
    episodes = list(episodes)
    lengths = np.array([episode_length(ep) for ep in episodes])
    actions = np.concatenate([ep["action"][1:] for ep in episodes])
    return {
        "episodes": len(episodes),
        "steps": int(lengths.sum()),
        "length_min": int(lengths.min()),
        "length_mean": float(lengths.mean()),
        "length_max": int(lengths.max()),
        "success_rate": float(np.mean([episode_success(ep) for ep in episodes])),
        "return_mean": float(np.mean([ep["reward"][1:].sum() for ep in episodes])),
        "image_shape": list(episodes[0]["image"].shape[1:]),
        "action_dim": int(actions.shape[1]),
        "action_min": actions.min(0).round(3).tolist(),
        "action_max": actions.max(0).round(3).tolist(),
    }
