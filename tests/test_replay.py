"""Sequence replay: shapes, windows inside/across episodes, is_first at seams, determinism, eviction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmil.data.episodes import EpisodeError
from cmil.data.replay import SequenceReplay, batch_to_torch


def make_episode(steps: int, ep_id: int, action_dim: int = 2, size: int = 8) -> dict[str, np.ndarray]:
    """An episode whose frames encode (episode id, row): channel 0 = row, channel 1 = episode id."""
    rows = steps + 1
    image = np.zeros((rows, size, size, 3), np.uint8)
    image[..., 0] = (np.arange(rows) % 256)[:, None, None]
    image[..., 1] = ep_id
    action = np.full((rows, action_dim), 0.5, np.float32)
    action[0] = 0.0
    return {"image": image, "action": action, "reward": np.arange(rows, dtype=np.float32),
            "success": np.zeros(rows, bool), "is_first": np.arange(rows) == 0,
            "is_last": np.arange(rows) == rows - 1, "is_terminal": np.zeros(rows, bool)}


def decode(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(episode id, row) of every sampled frame, each (B, L)."""
    return batch["image"][:, :, 0, 0, 1].astype(int), batch["image"][:, :, 0, 0, 0].astype(int)


def test_sample_shapes_and_dtypes():
    replay = SequenceReplay(seq_len=6, seed=0)
    for i in range(3):
        replay.add_episode(make_episode(20, i, action_dim=3))
    batch = replay.sample(5)
    assert batch["image"].shape == (5, 6, 8, 8, 3) and batch["image"].dtype == np.uint8
    assert batch["action"].shape == (5, 6, 3) and batch["action"].dtype == np.float32
    assert batch["reward"].shape == (5, 6) and batch["reward"].dtype == np.float32
    for key in ("is_first", "is_last", "is_terminal", "success"):
        assert batch[key].shape == (5, 6) and batch[key].dtype == np.bool_
    assert replay.num_episodes == 3 and replay.num_steps == 60 and len(replay) == 60
    assert replay.num_frames == 63


def test_windows_stay_inside_long_episodes():
    replay = SequenceReplay(seq_len=7, seed=1)
    for i in range(4):
        replay.add_episode(make_episode(15 + 5 * i, i))
    for _ in range(20):
        batch = replay.sample(8)
        ep, row = decode(batch)
        assert (ep == ep[:, :1]).all(), "a window left its episode"
        assert (np.diff(row, axis=1) == 1).all(), "rows are not consecutive"
        np.testing.assert_array_equal(batch["is_first"], row == 0)
        np.testing.assert_array_equal(batch["reward"], row)  # every key comes from the same rows


def test_short_episodes_fill_windows_across_boundaries_with_is_first():
    replay = SequenceReplay(seq_len=10, seed=2)
    for i in range(5):
        replay.add_episode(make_episode(2, i))  # 3 rows each, shorter than the window
    batch = replay.sample(16)
    ep, row = decode(batch)
    assert (row[:, 0] == 0).all(), "a short episode is sampled from its first row"
    np.testing.assert_array_equal(batch["is_first"], row == 0)
    # Wherever the episode changes, the new one starts at row 0 with is_first and a zero action.
    seam = ep[:, 1:] != ep[:, :-1]
    assert seam.any()
    assert batch["is_first"][:, 1:][seam].all()
    assert (batch["action"][:, 1:][seam] == 0).all()
    np.testing.assert_array_equal(ep[:, 1:][seam], (ep[:, :-1][seam] + 1) % 5)  # the next stored episode
    # Within an episode the rows stay consecutive.
    same = ~seam
    assert (np.diff(row, axis=1)[same] == 1).all()


def test_single_short_episode_wraps_onto_itself():
    replay = SequenceReplay(seq_len=8, seed=0)
    replay.add_episode(make_episode(2, 7))
    batch = replay.sample(2)
    _, row = decode(batch)
    np.testing.assert_array_equal(row[0], [0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(batch["is_first"][0], row[0] == 0)


def test_episodes_drawn_in_proportion_to_length():
    replay = SequenceReplay(seq_len=1, seed=3)
    replay.add_episode(make_episode(9, 0))  # 10 rows
    replay.add_episode(make_episode(89, 1))  # 90 rows
    ep, _ = decode(replay.sample(4000))
    assert abs((ep == 1).mean() - 0.9) < 0.03


def test_deterministic_given_seed():
    def build(seed):
        replay = SequenceReplay(seq_len=5, seed=seed)
        for i in range(3):
            replay.add_episode(make_episode(12 + i, i))
        return replay

    a, b, c = build(4), build(4), build(5)
    for _ in range(3):
        sa, sb, sc = a.sample(6), b.sample(6), c.sample(6)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key])
    assert not np.array_equal(sa["image"], sc["image"])
    # The generator state can be saved and restored (for resuming runs).
    state = a.rng_state()
    first = a.sample(4)
    a.set_rng_state(state)
    np.testing.assert_array_equal(a.sample(4)["image"], first["image"])


def test_capacity_evicts_oldest_episodes():
    replay = SequenceReplay(seq_len=4, capacity_steps=25, seed=0)
    for i in range(4):
        replay.add_episode(make_episode(10, i))
    assert replay.num_episodes == 2 and replay.num_steps == 20 and replay.total_added == 4
    ep, _ = decode(replay.sample(64))
    assert set(np.unique(ep)) == {2, 3}
    # An episode longer than the whole capacity is still kept (alone).
    replay.add_episode(make_episode(40, 9))
    assert replay.num_episodes == 1 and replay.num_steps == 40


def test_bytes_per_frame_and_no_float_images():
    replay = SequenceReplay(seq_len=4)
    replay.add_episode(make_episode(5, 0, action_dim=9, size=64))
    assert replay.bytes_per_frame() == 64 * 64 * 3 + 9 * 4 + 4 + 4
    assert replay.episodes[0]["image"].dtype == np.uint8
    assert replay.nbytes() == 6 * replay.bytes_per_frame()


def test_rejects_bad_or_mismatched_episodes():
    replay = SequenceReplay(seq_len=4)
    bad = make_episode(5, 0)
    bad["image"] = bad["image"].astype(np.float32)
    with pytest.raises(EpisodeError):
        replay.add_episode(bad)
    replay.add_episode(make_episode(5, 0, action_dim=2))
    with pytest.raises(ValueError):
        replay.add_episode(make_episode(5, 1, action_dim=3))
    with pytest.raises(ValueError):
        SequenceReplay(seq_len=4).sample(2)


def test_batch_to_torch_keeps_dtypes():
    replay = SequenceReplay(seq_len=3, seed=0)
    replay.add_episode(make_episode(6, 0))
    batch = batch_to_torch(replay.sample(2), "cpu")
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 8, 8, 3)
    assert batch["action"].dtype == torch.float32 and batch["is_first"].dtype == torch.bool


@pytest.mark.parametrize("cover_edges", [False, True])
def test_cover_edges_trains_the_first_frames_as_often_as_the_middle(cover_edges):
    # One 40-step episode, windows of 8: with uniform starts frame 0 is in 1/8 as many windows as a
    # middle frame; with cover_edges every frame is in at least as many, and windows stay in the episode.
    replay = SequenceReplay(seq_len=8, seed=0, cover_edges=cover_edges)
    replay.add_episode(make_episode(40, ep_id=3))
    counts = np.zeros(41)
    for _ in range(200):
        ep, row = decode(replay.sample(16))
        assert (ep == 3).all() and (np.diff(row, axis=1) == 1).all()
        np.add.at(counts, row.ravel(), 1)
    middle = counts[15:26].mean()
    if cover_edges:
        assert counts.min() >= 0.8 * middle
    else:
        assert counts[0] < 0.25 * middle
