"""Minari in and out, on datasets the tests make with Minari's own DataCollector (never downloaded)."""

import inspect
import json

import gymnasium as gym
import numpy as np
import pytest

import gym_helpers  # noqa: F401  (registers the CmilTest/* envs)

minari = pytest.importorskip("minari")
pytest.importorskip("jax")  # DataCollector needs it (minari[create], in the dev extra)

from cmil.cli import main  # noqa: E402
from cmil.data.collect import collect_demos  # noqa: E402
from cmil.data.episodes import load_episodes  # noqa: E402
from cmil.envs import make_env  # noqa: E402
from cmil.experts import make_expert  # noqa: E402

LOSSLESS = {"jpeg_encoding": False} if "jpeg_encoding" in inspect.signature(minari.DataCollector).parameters else {}


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def collect(env: gym.Env, dataset_id: str, policy, episodes: int = 3, **collector):
    """A Minari dataset of `episodes` episodes of `policy(obs, env)` in `env`, by minari.DataCollector."""
    env = minari.DataCollector(env, record_infos=True, **collector)
    try:
        for seed in range(episodes):
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(policy(obs, env))
                done = terminated or truncated
        return env.create_dataset(dataset_id, algorithm_name="test", author="cmil", author_email="-",
                                  code_permalink="-", description="test")
    finally:
        env.close()


def test_import_image_dataset(tmp_path, capsys):
    env = make_env("point", seed=0)
    expert = make_expert("point", env)
    dataset = collect(env, "test/point/expert-v0", lambda _obs, _env: expert.act(), **LOSSLESS)
    out = tmp_path / "demos"
    assert main(["demos", "import", "--minari", "test/point/expert-v0", "--out", str(out)]) == 0
    episodes = load_episodes(out, image_size=64, action_dim=2)
    assert len(episodes) == 3
    for ep, src in zip(episodes, dataset.iterate_episodes(), strict=True):
        assert len(ep["image"]) == len(src.observations) == len(src.actions) + 1
        np.testing.assert_array_equal(ep["image"], src.observations)
        np.testing.assert_allclose(ep["action"][1:], src.actions, atol=1e-6)
        np.testing.assert_array_equal(ep["action"][0], 0.0)
        np.testing.assert_allclose(ep["reward"][1:], src.rewards, rtol=1e-6)
        np.testing.assert_array_equal(ep["success"], src.infos["success"])
    assert json.loads((out / "expert_stats.json").read_text())["success_rate"] == 1.0
    # A dataset directory works as well as an id under the root; train accepts the imported demos.
    assert main(["demos", "import", "--minari", str(dataset.storage.data_path.parent), "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--task", "point", "--method", "bc", "--dry-run", "--demos", str(out),
                 "--run-dir", str(tmp_path / "run")]) == 0


def test_import_dict_observations_rescales_actions(tmp_path):
    env = gym.wrappers.AddRenderObservation(gym.make("CmilTest/SlideLimited-v0", render_mode="rgb_array"),
                                            render_only=False)
    dataset = collect(env, "test/slide/pixels-v0", lambda obs, _env: gym_helpers.slide_expert(obs["state"]), 2)
    out = tmp_path / "demos"
    assert main(["demos", "import", "--minari", "test/slide/pixels-v0", "--out", str(out)]) == 0
    episodes = load_episodes(out)
    first = next(iter(dataset.iterate_episodes()))
    assert episodes[0]["image"].shape[1:] == (64, 64, 3)  # 96x96 frames, resized
    np.testing.assert_allclose(episodes[0]["action"][1:], first.actions / 2.0, atol=1e-6)  # [-2, 2] -> [-1, 1]
    assert episodes[0]["success"].any()


def test_state_only_dataset_is_refused(tmp_path, capsys):
    collect(gym.make("CmilTest/SlideLimited-v0"), "test/slide/state-v0",
            lambda obs, _env: gym_helpers.slide_expert(obs), 1)
    capsys.readouterr()
    assert main(["demos", "import", "--minari", "test/slide/state-v0", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "no image observations" in err and len(err.strip().splitlines()) == 1
    assert main(["demos", "import", "--minari", "test/nothing-v0", "--out", str(tmp_path / "d")]) == 2
    assert "never downloads" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_export_round_trip(tmp_path, minari_root, capsys):
    demos = tmp_path / "demos"
    collect_demos("point", 3, demos, seed=0, quiet=True)
    assert main(["demos", "export", str(demos), "--minari", "cmil/point/expert-v0"]) == 0
    dataset = minari.load_dataset("cmil/point/expert-v0")  # Minari's own reader
    assert dataset.total_episodes == 3 and dataset.observation_space.shape == (64, 64, 3)
    assert dataset.env_spec.entry_point == "cmil.envs:make_env" and dataset.env_spec.kwargs["name"] == "point"
    env = dataset.recover_environment()  # the env spec rebuilds cmil's pixel env of the task
    assert env.observation_space == dataset.observation_space and env.action_space == dataset.action_space
    env.close()
    back = tmp_path / "back"
    assert main(["demos", "import", "--minari", "cmil/point/expert-v0", "--out", str(back)]) == 0
    for ours, theirs in zip(load_episodes(demos), load_episodes(back), strict=True):
        for key in ("image", "action", "reward", "success", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    # Nothing is overwritten.
    capsys.readouterr()
    assert main(["demos", "export", str(demos), "--minari", "cmil/point/expert-v0"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["demos", "export", str(demos), "--minari", "not an id"]) == 2
