"""Import of DreamerV2 episode files (the format of the paper's demos) into cmil's format.

DreamerV2 stores `action[t+1]` as the action taken at frame t with a zero first row, as cmil does,
so actions carry over unchanged. Older files have `discount` (0 at a terminal step) instead of
`is_first`/`is_last`/`is_terminal`, and extra state keys; 128x128 frames are reduced to the target
size by taking every n-th pixel (the authors' own down-sampling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmil.data.episodes import Episode, EpisodeError, episode_paths, save_episode, validate_episode
from cmil.errors import OutputExistsError

STATE_KEYS_SKIPPED = {"image", "action", "reward", "discount", "is_first", "is_last", "is_terminal", "success"}


def convert_dreamer_episode(raw: dict[str, np.ndarray], where: str, image_size: int = 64,
                            success_fn=None) -> Episode:
    """One DreamerV2 episode dict -> a validated cmil episode."""
    for key in ("image", "action"):
        if key not in raw:
            raise EpisodeError(f"{where}: missing key {key!r}")
    image = raw["image"]
    if image.dtype != np.uint8:
        raise EpisodeError(f"{where}: image dtype is {image.dtype}, expected uint8")
    if image.ndim != 4 or image.shape[-1] != 3:
        raise EpisodeError(f"{where}: image shape is {image.shape}, expected (T+1, H, W, 3)")
    size = image.shape[1]
    if size != image_size:
        if size % image_size:
            raise EpisodeError(f"{where}: image size {size} is not a multiple of {image_size}")
        step = size // image_size
        image = image[:, ::step, ::step]
    rows = len(raw["action"])
    ep: Episode = {
        "image": np.ascontiguousarray(image),
        "action": raw["action"].astype(np.float32),
        "reward": raw.get("reward", np.zeros(rows)).astype(np.float32).reshape(rows),
    }
    if "is_first" in raw:
        ep["is_first"] = raw["is_first"].astype(bool)
        ep["is_last"] = raw["is_last"].astype(bool)
        ep["is_terminal"] = raw["is_terminal"].astype(bool)
    else:
        ep["is_first"] = np.arange(rows) == 0
        ep["is_last"] = np.arange(rows) == rows - 1
        discount = raw.get("discount", np.ones(rows))
        ep["is_terminal"] = ep["is_last"] & (discount == 0)
    if "success" in raw:
        ep["success"] = raw["success"].astype(bool)
    elif success_fn is not None:
        ep["success"] = success_fn(raw)
    else:
        ep["success"] = np.zeros(rows, bool)
    state = [raw[k].reshape(rows, -1).astype(np.float32) for k in sorted(raw)
             if k not in STATE_KEYS_SKIPPED and raw[k].ndim >= 1 and len(raw[k]) == rows
             and np.issubdtype(raw[k].dtype, np.number)]
    if state:
        ep["state"] = np.concatenate(state, axis=1)
    validate_episode(ep, where, image_size=image_size)
    return ep


def import_dreamer_episodes(src: str | Path, out: str | Path, image_size: int = 64,
                            action_dim: int | None = None, success_fn=None) -> list[Path]:
    """Convert every `.npz` in `src`; validates all before writing any (all or nothing)."""
    out = Path(out)
    if out.exists() and any(out.glob("*.npz")):
        raise OutputExistsError(f"{out}: already holds episodes; choose another --out (nothing is overwritten)")
    episodes = []
    for path in episode_paths(src):
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
        except Exception as exc:
            raise EpisodeError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
        ep = convert_dreamer_episode(raw, str(path), image_size, success_fn)
        if action_dim is not None and ep["action"].shape[1] != action_dim:
            raise EpisodeError(f"{path}: action dimension is {ep['action'].shape[1]}, expected {action_dim}")
        episodes.append((path.name, ep))
    return [save_episode(out, ep, name=name) for name, ep in episodes]
