"""Sequence replay: whole episodes in memory, sampled as fixed-length windows.

Episodes are kept as they are on disk (`cmil.data.episodes`: uint8 images, `action[t]` led to frame t,
row 0 of an episode is its reset frame with a zero action and `is_first`). A sampled window of L rows:

- comes from an episode drawn with probability proportional to its number of rows (so every stored
  frame is about equally likely to be seen);
- stays inside that episode when it has at least L rows, starting uniformly over its L-row windows
  (DreamerV2), so frame t < L of an episode lies in only t + 1 of the windows that a middle frame lies
  in: the first frames are seen up to L times less often. With `cover_edges` the start is drawn uniformly
  from [-(L-1), rows-1] and clipped into the episode instead, so every frame, the first and last included,
  lies in at least L of the equally likely starts (the first and last L frames in up to 2L);
- otherwise starts at the episode's first row and runs on into the following stored episodes (wrapping
  around to the first), so windows are always full. The row where a new episode begins has `is_first`
  True (and a zero action), which is where the RSSM resets its state, so nothing leaks across the seam.

Memory per stored frame: 64*64*3 image bytes + 4*A action bytes + 4 reward bytes + 4 flag bytes
(`bytes_per_frame`); 12,332 bytes for 64x64 images and 9-dim actions. The optional simulator `state`
is dropped unless `keep_state=True`.

Two buffers (expert and online) live side by side; each has its own seeded generator, so a run draws
the same batches for the same seed and the same sequence of `add_episode` calls.
"""

from __future__ import annotations

import numpy as np
import torch

from cmil.data.episodes import FLAG_KEYS, Episode, validate_episode

SAMPLE_KEYS = ("image", "action", "reward") + FLAG_KEYS


class SequenceReplay:
    """Stores whole episodes (oldest evicted beyond `capacity_steps`) and samples (B, L, ...) windows."""

    def __init__(self, seq_len: int, capacity_steps: int = 1_000_000, seed: int = 0, keep_state: bool = False,
                 cover_edges: bool = False, extra_keys: tuple[str, ...] = ()):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len
        self.capacity_steps = capacity_steps
        self.keep_state = keep_state
        self.extra_keys = tuple(extra_keys)  # per-frame labels a method attached (Method.label_episode)
        self.cover_edges = cover_edges
        self.rng = np.random.default_rng(seed)
        self.episodes: list[Episode] = []
        self._rows = np.zeros(0, np.int64)  # rows (frames) per stored episode
        self._starts = np.zeros(0, np.int64)  # index of each episode's first row in the virtual concatenation
        self._num_steps = 0
        self.total_added = 0  # episodes ever added, evicted ones included

    # --- contents -----------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        """Environment steps stored (each episode's rows minus one)."""
        return self._num_steps

    @property
    def num_frames(self) -> int:
        return int(self._rows.sum())

    def __len__(self) -> int:
        """Environment steps stored (as `num_steps`)."""
        return self._num_steps

    def bytes_per_frame(self) -> int:
        """Bytes one stored frame (row) takes, over all kept keys."""
        if not self.episodes:
            return 0
        ep = self.episodes[-1]
        return sum(v[0].nbytes for v in ep.values())

    def nbytes(self) -> int:
        return sum(v.nbytes for ep in self.episodes for v in ep.values())

    def add_episode(self, ep: Episode) -> None:
        """Store one episode (validated; arrays are kept, not copied, when already of the right dtype)."""
        validate_episode(ep, f"replay episode {self.total_added}")
        if self.episodes:
            ref = self.episodes[0]
            if ep["image"].shape[1:] != ref["image"].shape[1:] or ep["action"].shape[1:] != ref["action"].shape[1:]:
                raise ValueError(f"episode shapes {ep['image'].shape[1:]}/{ep['action'].shape[1:]} differ from "
                                 f"the stored {ref['image'].shape[1:]}/{ref['action'].shape[1:]}")
        if self.keep_state and "state" not in ep:
            raise ValueError("keep_state=True but the episode has no 'state'")
        missing = [k for k in self.extra_keys if k not in ep]
        if missing:
            raise ValueError(f"replay episode {self.total_added} lacks the labels {missing} this replay keeps")
        keys = SAMPLE_KEYS + (("state",) if self.keep_state else ()) + self.extra_keys
        stored = {k: np.ascontiguousarray(ep[k]) for k in keys}
        stored["action"] = stored["action"].astype(np.float32, copy=False)
        stored["reward"] = stored["reward"].astype(np.float32, copy=False)
        self.episodes.append(stored)
        self._num_steps += len(stored["action"]) - 1
        self.total_added += 1
        self._evict()
        self._index()

    def _evict(self) -> None:
        # Oldest first, always keeping the newest episode.
        while self._num_steps > self.capacity_steps and len(self.episodes) > 1:
            old = self.episodes.pop(0)
            self._num_steps -= len(old["action"]) - 1

    def first_index(self) -> int:
        """The `total_added` count of the oldest stored episode (its id), so stored index = id - first_index."""
        return self.total_added - len(self.episodes)

    def _index(self) -> None:
        self._rows = np.array([len(ep["action"]) for ep in self.episodes], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._rows)[:-1]]).astype(np.int64)

    # --- sampling -----------------------------------------------------------------------------
    def sample(self, batch_size: int, among: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """A batch of windows: dict of arrays (B, L, ...) with the episode keys (image uint8, action
        float32, reward float32, success/is_first/is_last/is_terminal bool). `among`: indices of the stored
        episodes to draw from (each still in proportion to its rows); None = all."""
        if not self.episodes:
            raise ValueError("cannot sample from an empty replay")
        L = self.seq_len
        first = self.episodes[0]
        out = {k: np.empty((batch_size, L) + first[k].shape[1:], first[k].dtype) for k in first}
        if among is None:
            frames = self.rng.integers(0, self.num_frames, size=batch_size)
            ep_idx = np.searchsorted(self._starts, frames, side="right") - 1
        else:
            among = np.asarray(among, np.int64)
            if not len(among) or among.min() < 0 or among.max() >= len(self.episodes):
                raise ValueError(f"among: episode indices in [0, {len(self.episodes)}) expected, got {among}")
            frames = self.rng.integers(0, int(self._rows[among].sum()), size=batch_size)
            ep_idx = among[np.searchsorted(np.cumsum(self._rows[among]), frames, side="right")]
        for b, e in enumerate(ep_idx):
            rows = self._rows[e]
            if rows < L:
                start = 0
            elif self.cover_edges:  # a start in [-(L-1), rows-1] clipped into the episode (see module doc)
                start = min(max(int(self.rng.integers(-(L - 1), rows)), 0), rows - L)
            else:
                start = int(self.rng.integers(0, rows - L + 1))
            self._fill(out, b, int(e), start)
        return out

    def _fill(self, out: dict[str, np.ndarray], b: int, e: int, start: int) -> None:
        """Copy L rows from episode e at `start`, continuing into the next episodes if it runs out."""
        filled = 0
        while filled < self.seq_len:
            ep = self.episodes[e]
            n = min(self.seq_len - filled, len(ep["action"]) - start)
            for k, arr in out.items():
                arr[b, filled:filled + n] = ep[k][start:start + n]
            filled += n
            e, start = (e + 1) % len(self.episodes), 0

    # --- state --------------------------------------------------------------------------------
    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def batch_to_torch(batch: dict[str, np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Numpy batch -> torch tensors on `device`, keeping dtypes (images stay uint8 until the model)."""
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if non_blocking:
            t = t.pin_memory()
        out[k] = t.to(device, non_blocking=non_blocking)
    return out


# --- transition samplers (the model-free methods: BC, DAC) -----------------------------------------

def demo_pairs(expert: SequenceReplay) -> tuple[np.ndarray, np.ndarray]:
    """All (image_t, action_{t+1}) pairs of the demos."""
    images, actions = [], []
    for ep in expert.episodes:
        images.append(ep["image"][:-1])
        actions.append(ep["action"][1:])
    return np.concatenate(images), np.concatenate(actions).astype(np.float32)


def episode_transition_count(ep: dict[str, np.ndarray]) -> int:
    """T steps, plus the absorbing self-loop if the episode terminated."""
    return len(ep["action"]) - 1 + int(bool(ep["is_terminal"][-1]))


def sample_transitions(episodes: list[dict[str, np.ndarray]], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n transitions drawn uniformly over all transitions of `episodes` (absorbing ones included).

    Index t < T of an episode with T steps is (image[t], action[t+1], image[t+1]); if the episode
    terminated, its last transition leads to the absorbing state instead, and index T is the
    absorbing self-loop (absorbing, zero action, absorbing). Absorbing images are zeros (masked out)."""
    counts = np.array([episode_transition_count(ep) for ep in episodes])
    flat = rng.integers(0, counts.sum(), n)
    which = np.searchsorted(np.cumsum(counts), flat, side="right")
    idx = flat - (np.cumsum(counts) - counts)[which]
    first = episodes[0]
    image = np.zeros((n, *first["image"].shape[1:]), np.uint8)
    next_image = np.zeros_like(image)
    action = np.zeros((n, first["action"].shape[1]), np.float32)
    absorbing = np.zeros(n, bool)
    next_absorbing = np.zeros(n, bool)
    for i, (e, t) in enumerate(zip(which, idx, strict=True)):
        ep = episodes[e]
        steps = len(ep["action"]) - 1
        if t == steps:  # the absorbing self-loop (only exists for terminated episodes)
            absorbing[i] = next_absorbing[i] = True
            continue
        image[i] = ep["image"][t]
        action[i] = ep["action"][t + 1]
        if t == steps - 1 and ep["is_terminal"][-1]:
            next_absorbing[i] = True
        else:
            next_image[i] = ep["image"][t + 1]
    return {"image": image, "action": action, "next_image": next_image, "absorbing": absorbing,
            "next_absorbing": next_absorbing}
