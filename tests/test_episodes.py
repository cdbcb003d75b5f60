"""The episode format: round trip, validation errors, DreamerV2 import, CLI errors."""

from pathlib import Path

import numpy as np
import pytest

from cmil.cli import main
from cmil.data.dreamer_import import import_dreamer_episodes
from cmil.data.episodes import (
    EpisodeError,
    load_episode,
    load_episodes,
    save_episode,
    summarize,
    validate_episode,
)

PAPER_DEMOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper-kitchen-demos"


def test_round_trip(tmp_path, point_episodes):
    ep = point_episodes[0]
    path = save_episode(tmp_path, ep)
    assert path.name.endswith(f"-{len(ep['action']) - 1}.npz")
    back = load_episode(path)
    assert set(back) == set(ep)
    for key in ep:
        np.testing.assert_array_equal(back[key], ep[key])
        assert back[key].dtype == ep[key].dtype
    assert back["image"].dtype == np.uint8
    assert back["is_first"][0] and not back["is_first"][1:].any() and back["is_last"][-1]
    np.testing.assert_array_equal(back["action"][0], 0)


def test_recorder_aligns_actions(point_episodes):
    ep = point_episodes[0]
    assert len(ep["image"]) == len(ep["action"]) == len(ep["success"])
    assert ep["success"].any()
    assert "state" in ep and ep["state"].shape == (len(ep["action"]), 4)


def _corrupt(ep, key, value):
    bad = dict(ep)
    bad[key] = value
    return bad


@pytest.mark.parametrize("mutate,message", [
    (lambda ep: _corrupt(ep, "image", ep["image"].astype(np.float32)), "image dtype"),
    (lambda ep: _corrupt(ep, "image", ep["image"][:, :32]), "image shape"),
    (lambda ep: _corrupt(ep, "image", ep["image"][:-3]), "truncated"),
    (lambda ep: _corrupt(ep, "action", np.where(np.arange(len(ep["action"]))[:, None] == 2, np.nan, ep["action"])),
     "non-finite"),
    (lambda ep: _corrupt(ep, "action", ep["action"] * 5), "leave [-1, 1]"),
    (lambda ep: _corrupt(ep, "is_first", np.zeros_like(ep["is_first"])), "is_first"),
    (lambda ep: _corrupt(ep, "success", ep["success"].astype(np.int64)), "success dtype"),
    (lambda ep: {k: v for k, v in ep.items() if k != "reward"}, "missing keys"),
])
def test_validation_errors(point_episodes, mutate, message):
    with pytest.raises(EpisodeError, match="^ep.npz: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        validate_episode(mutate(point_episodes[0]), "ep.npz")


def test_mismatched_action_dim_and_size(tmp_path, point_episodes):
    save_episode(tmp_path, point_episodes[0])
    with pytest.raises(EpisodeError, match="action dimension is 2, expected 9"):
        load_episodes(tmp_path, action_dim=9)
    with pytest.raises(EpisodeError, match="image size is 64x64, expected 32x32"):
        load_episodes(tmp_path, image_size=32)


def test_empty_and_garbage_files(tmp_path):
    with pytest.raises(EpisodeError, match="no episode files"):
        load_episodes(tmp_path)
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(EpisodeError, match="broken.npz: cannot read"):
        load_episodes(tmp_path)


def _write_raw(path, **arrays):
    np.savez_compressed(path, **arrays)


@pytest.mark.parametrize("bad,message", [
    ("dtype", "image dtype is float32"),
    ("dim", "action dimension is 2, expected 3"),
    ("nan", "non-finite"),
    ("empty", "no episode files"),
    ("truncated", "cannot read"),
])
def test_cli_validation_error_is_one_line_and_writes_nothing(tmp_path, capsys, point_episodes, bad, message):
    src = tmp_path / "src"
    src.mkdir()
    ep = dict(point_episodes[0])
    if bad == "dtype":
        ep["image"] = ep["image"].astype(np.float32)
    elif bad == "nan":
        ep["reward"] = ep["reward"].copy()
        ep["reward"][3] = np.inf
    if bad != "empty":
        _write_raw(src / "a.npz", **ep)
    if bad == "truncated":
        data = (src / "a.npz").read_bytes()
        (src / "a.npz").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = main(["demos", "import", str(src), "--out", str(out)] + (["--action-dim", "3"] if bad == "dim" else []))
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and message in err, err
    if bad != "empty":
        assert str(src / "a.npz") in err
    assert not out.exists() or not any(out.iterdir())


def test_import_converts_discount_and_resizes(tmp_path, point_episodes):
    ep = point_episodes[0]
    rows = len(ep["action"])
    big = np.repeat(np.repeat(ep["image"], 2, axis=1), 2, axis=2)  # 128x128
    discount = np.ones(rows, np.float32)
    discount[-1] = 0.0
    src = tmp_path / "src"
    src.mkdir()
    _write_raw(src / "old.npz", image=big, action=ep["action"], reward=ep["reward"], discount=discount,
               qpos=np.zeros((rows, 5)))
    paths = import_dreamer_episodes(src, tmp_path / "out", image_size=64)
    back = load_episode(paths[0])
    np.testing.assert_array_equal(back["image"], ep["image"])
    assert back["is_first"][0] and back["is_last"][-1] and back["is_terminal"][-1] and not back["is_terminal"][:-1].any()
    assert back["state"].shape == (rows, 5)
    np.testing.assert_array_equal(back["action"], ep["action"])


@pytest.mark.skipif(not PAPER_DEMOS.exists(), reason="paper demos not available")
def test_import_paper_kitchen_demos(tmp_path, capsys):
    out = tmp_path / "kitchen"
    assert main(["demos", "import", str(PAPER_DEMOS), "--out", str(out), "--action-dim", "9",
                 "--success-reward", "4"]) == 0
    episodes = load_episodes(out, image_size=64, action_dim=9)
    assert len(episodes) == 10
    stats = summarize(episodes)
    assert stats["success_rate"] == 1.0 and stats["length_min"] == 280
    # The action taken at frame t is stored at t + 1: the first row is the zero padding.
    assert all(np.all(ep["action"][0] == 0) and np.abs(ep["action"][1]).sum() > 0 for ep in episodes)
    assert main(["demos", "show", str(out), "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert '"episodes": 10' in capsys.readouterr().out
