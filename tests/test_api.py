"""The Python API: the README's example runs as written (training shrunk to a dry run), and its parts."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

import cmil
import gym_helpers
from cmil.errors import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its <!-- api-example --> block"
    return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, one_thread, capsys):
    import cmil.api

    real = cmil.api.train_policy

    def shrunk(*args, **settings):  # seconds instead of minutes: the same code path as a dry run
        return real(*args, **{**settings, "dry_run": True, "bc.steps": 3})

    monkeypatch.setattr(cmil.api, "train_policy", shrunk)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    metrics = json.loads(json.dumps(eval(capsys.readouterr().out.strip().splitlines()[-1])))
    assert metrics["eval/episodes"] == 5.0 and "eval/success_rate" not in metrics  # Reacher: returns only
    assert len(list((tmp_path / "demos" / "reacher").glob("*.npz"))) == 10
    assert (tmp_path / "runs" / "reacher-bc" / "final.json").exists()


def test_register_train_evaluate_and_act(tmp_path, one_thread):
    def make(**kwargs):
        import gymnasium as gym

        return gym.make("CmilTest/SlideLimited-v0", render_mode="rgb_array", **kwargs)

    cmil.register_task("slide", make, expert=gym_helpers.slide_expert, success_key="success")
    stats = cmil.collect_demos("slide", episodes=3, out=tmp_path / "demos")
    assert stats["success_rate"] > 0.5
    result = cmil.train_policy("slide", method="cmil", demos=str(tmp_path / "demos"), run_dir=str(tmp_path / "run"),
                               dry_run=True, env_kwargs={"goal_radius": 0.2})
    assert result["run_dir"] == str(tmp_path / "run") and 0.0 <= result["success_rate"] <= 1.0
    metrics = cmil.evaluate_run(tmp_path / "run", episodes=2)
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    policy = cmil.load_policy(tmp_path / "run")
    policy.reset()
    frame = np.zeros((96, 96, 3), np.uint8)  # any size: resized as the env's frames are
    action = policy.act(frame)
    assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 2.0)  # env's [-2, 2]
    assert "cmil on slide" in repr(policy)


def test_api_mistakes_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown config fields"):
        cmil.train_policy("point", method="bc", nope=1)
    with pytest.raises(UsageError, match="conflicts with --method vmail"):
        cmil.make_config("point", method="vmail", **{"agent.beta": 5.0})
    assert cmil.make_config("point", method="vmail", **{"agent.beta": 0.0}).agent.beta == 0.0  # agrees: fine
    assert not cmil.make_config("point", method="vmail", preset="long").wm.freeze_representation  # preset's, not the user's
    with pytest.raises(UsageError, match="unknown preset"):
        cmil.make_config("point", preset="nope")
    with pytest.raises(UsageError, match="task name"):
        cmil.register_task("gym:x", lambda: None)
    with pytest.raises(UsageError, match="not a run directory"):
        cmil.load_policy(tmp_path)
