"""Meta-World pixel envs and their scripted expert (the default task's contract; see docs/default_task.md)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from cmil.envs.metaworld_env import (  # noqa: E402
    FRONT_CAMERA,
    METAWORLD_TASKS,
    PUSH_CAMERA,
    MetaWorldImageEnv,
    make_metaworld_env,
    metaworld_task_specs,
    task_camera,
    task_episode_length,
)
from cmil.envs.rendering import RendererGuard  # noqa: E402
from cmil.errors import UsageError  # noqa: E402
from cmil.experts.metaworld_expert import make_metaworld_expert  # noqa: E402

DEFAULT_TASK = "push"  # the recommended default task (docs/default_task.md)


@pytest.fixture
def env():
    e = make_metaworld_env(DEFAULT_TASK, seed=0)
    yield e
    e.close()


def test_contract(env):
    obs, info = env.reset(seed=3)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert env.action_space.shape == (4,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert info["success"] is False
    assert info["state"].shape == (39,) and info["state"].dtype == np.float64
    length = task_episode_length(DEFAULT_TASK)
    for t in range(1, length + 1):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert isinstance(info["success"], bool) and np.isfinite(reward)
        assert not term
        assert trunc == (t == length)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(4, np.float32))


def test_seeding(env):
    first, info_a = env.reset(seed=7)
    env.step(env.action_space.sample())
    again, info_b = env.reset(seed=7)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(info_a["state"], info_b["state"])
    other, info_c = env.reset(seed=8)
    assert not np.array_equal(first, other)
    # Object (4:7) and goal (36:39) placement differ across seeds and across unseeded resets.
    assert np.linalg.norm(info_a["state"][4:7] - info_c["state"][4:7]) > 1e-3
    assert np.linalg.norm(info_a["state"][36:39] - info_c["state"][36:39]) > 1e-3
    _, info_d = env.reset()
    _, info_e = env.reset()
    assert np.linalg.norm(info_d["state"][36:39] - info_e["state"][36:39]) > 1e-3


def test_constructor_seed_seeds_first_reset():
    e = make_metaworld_env(DEFAULT_TASK, seed=11)
    a, _ = e.reset()
    b, _ = e.reset(seed=11)
    e.close()
    np.testing.assert_array_equal(a, b)


def test_frame_shows_scene(env):
    obs, info = env.reset(seed=1)
    assert obs.std() > 10  # not a blank or constant frame
    # Moving the gripper changes the image: the gripper is in view.
    for _ in range(10):
        obs2, *_ = env.step(np.array([0.0, 1.0, -0.5, 0.0], np.float32))
    assert np.abs(obs2.astype(int) - obs.astype(int)).sum() > 500
    # The goal marker is drawn: a saturated green blob exists (Meta-World's push goal site is green).
    r, g, b = (obs[..., i].astype(int) for i in range(3))
    assert ((g > 150) & (r < 100) & (b < 100)).sum() >= 5
    # The object is in view: moving the puck by 5 cm changes the rendered frame.
    base = env.unwrapped
    base.mw._set_obj_xyz(info["state"][4:7] + np.array([0.05, 0.0, 0.0]))
    moved = base.camera.render(base.mw.data)
    base.mw._set_obj_xyz(info["state"][4:7])
    assert np.abs(moved.astype(int) - base.camera.render(base.mw.data).astype(int)).sum() > 300


def test_expert_succeeds(env):
    expert = make_metaworld_expert(env)
    env.reset(seed=5)
    expert.reset()
    success, done = False, False
    while not done:
        action = expert.act()
        assert action.shape == (4,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
        _, _, term, trunc, info = env.step(action)
        success |= info["success"]
        done = term or trunc
    assert success


def test_one_renderer_guard():
    e = make_metaworld_env(DEFAULT_TASK)
    with pytest.raises(RuntimeError):
        make_metaworld_env(DEFAULT_TASK)
    e.close()
    assert not RendererGuard.busy()


def test_task_specs_and_factories():
    import importlib

    specs = metaworld_task_specs()
    assert [s.name for s in specs] == [f"mw-{t}" for t in METAWORLD_TASKS]
    for spec in specs:
        module, fn = spec.env_factory.split(":")
        assert callable(getattr(importlib.import_module(module), fn))
        assert spec.episode_length == task_episode_length(spec.name)
    with pytest.raises(ValueError):
        MetaWorldImageEnv("no-such-task")


def test_every_v3_task_is_registered_with_its_measured_expert():
    """All 50 tasks, each with the benchmark's episode length and expert successes (docs/metaworld_tasks.md)."""
    import json
    from pathlib import Path

    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    from cmil.envs import task_spec

    assert sorted(f"{t}-v3" for t in METAWORLD_TASKS) == sorted(ALL_V3_ENVIRONMENTS)
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "metaworld_experts.json"
    measured = {r["task"]: r for r in json.loads(results.read_text())["tasks"]}
    for task in METAWORLD_TASKS:
        spec = task_spec(f"mw-{task}")
        assert spec.episode_length == measured[task]["episode_length"], task
        assert spec.expert_success == (measured[task]["successes"], measured[task]["episodes"]), task
    # The default task keeps its length and its own closer camera (the puck is ~4x4 pixels).
    assert task_episode_length("push") == 100 and task_camera("push") == PUSH_CAMERA
    assert task_camera("push-wall") == FRONT_CAMERA


@pytest.mark.parametrize("task", ["hammer", "shelf-place", "basketball"])
def test_new_tasks_render_and_their_expert_moves_the_scene(task):
    env = make_metaworld_env(task, seed=0)
    try:
        expert = make_metaworld_expert(env)
        first, _ = env.reset(seed=0)
        for _ in range(30):
            frame, *_ = env.step(expert.act())
        assert first.std() > 10 and np.abs(frame.astype(int) - first.astype(int)).sum() > 30_000
    finally:
        env.close()


def test_render_false_keeps_dynamics():
    a, b = MetaWorldImageEnv("push", render=False), make_metaworld_env("push")
    try:
        _, info_a = a.reset(seed=4)
        _, info_b = b.reset(seed=4)
        for _ in range(5):
            _, _, _, _, info_a = a.step(np.full(4, 0.3, np.float32))
            _, _, _, _, info_b = b.step(np.full(4, 0.3, np.float32))
        np.testing.assert_array_equal(info_a["state"], info_b["state"])
    finally:
        a.close()
        b.close()


def test_object_rgba_recolours_only_the_puck():
    frames, states = [], []
    for kwargs in ({}, {"object_rgba": [1, 1, 0, 1]}):  # one rendering env at a time (RendererGuard)
        env = make_metaworld_env("push", **kwargs)
        try:
            obs, info = env.reset(seed=4)
        finally:
            env.close()
        frames.append(obs.astype(int))
        states.append(info["state"])
    np.testing.assert_array_equal(states[0], states[1])   # the same scene
    changed = np.abs(frames[0] - frames[1]).sum(-1) > 30
    assert 4 <= changed.sum() <= 60   # a few pixels: the puck's
    yellow = frames[1][changed]
    assert (yellow[:, 0] > 150).all() and (yellow[:, 1] > 150).all() and (yellow[:, 2] < 100).all()
    with pytest.raises(ValueError, match="object_rgba"):
        MetaWorldImageEnv("push", render=False, object_rgba=[1, 1, 0])


def test_tasks_command_lists_expert_success(capsys):
    from cmil.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "mw-hammer" in out and "50/50 = 1.00" in out and "43/50 = 0.86" in out and "gym:ID" in out


def test_registry_integration():
    """The specs work through cmil.envs.make_env / cmil.experts.make_expert (the lead registers them there)."""
    from cmil.envs import list_tasks, make_env, register
    from cmil.experts import make_expert

    if "mw-push" not in list_tasks():
        for spec in metaworld_task_specs():
            register(spec)
    e = make_env("mw-push", seed=2)
    try:
        obs, info = e.reset()
        expert = make_expert("mw-push", e)
        expert.reset()
        obs, *_ = e.step(expert.act())
        assert obs.shape == (64, 64, 3) and e.unwrapped.episode_length == 100
    finally:
        e.close()


def test_expert_benchmark_writes_its_results(tmp_path):
    """benchmarks/metaworld_experts.py (docs/metaworld_tasks.md) on one task and three seeds."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "metaworld_experts.py"
    out = tmp_path / "experts.json"
    subprocess.run([sys.executable, str(script), "--tasks", "push", "--episodes", "3", "--check-rendered", "1",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    (row,) = json.loads(out.read_text())["tasks"]
    assert row["task"] == "push" and row["episodes"] == 3 and row["episode_length"] == 100
    assert row["successes"] == 3 and len(row["first_success"]) == 3 and row["steps_to_success_max"] <= 100


def test_placement_scale_narrows_placements_about_the_centre():
    # Push: object x in [-0.1, 0.1], y in [0.6, 0.7]; goal x in [-0.1, 0.1], y in [0.8, 0.9].
    full = MetaWorldImageEnv(DEFAULT_TASK, seed=0, render=False)
    narrow = MetaWorldImageEnv(DEFAULT_TASK, seed=0, render=False, placement_scale=0.25)
    try:
        objs, goals = [], []
        for s in range(20):
            _, info = narrow.reset(seed=s)
            objs.append(info["state"][4:6])
            goals.append(info["state"][36:38])
        objs, goals = np.array(objs), np.array(goals)
        assert np.all(np.abs(objs[:, 0]) <= 0.025 + 1e-9) and np.all(np.abs(objs[:, 1] - 0.65) <= 0.0125 + 1e-9)
        assert np.all(np.abs(goals[:, 0]) <= 0.025 + 1e-9) and np.all(np.abs(goals[:, 1] - 0.85) <= 0.0125 + 1e-9)
        assert objs[:, 0].std() > 1e-3  # still random inside the smaller box
        full_objs = np.array([full.reset(seed=s)[1]["state"][4:6] for s in range(20)])
        assert np.abs(full_objs[:, 0]).max() > 0.025  # the full range reaches beyond it
    finally:
        full.close()
        narrow.close()
    with pytest.raises(ValueError, match="placement_scale"):
        MetaWorldImageEnv(DEFAULT_TASK, render=False, placement_scale=0.0)


def test_action_repeat_holds_the_action_through_meta_world_steps():
    single = MetaWorldImageEnv(DEFAULT_TASK, seed=0, render=False)
    double = MetaWorldImageEnv(DEFAULT_TASK, seed=0, render=False, action_repeat=2, episode_length=3)
    try:
        single.reset(seed=7)
        double.reset(seed=7)
        action = np.array([0.5, -0.4, 0.2, 0.0], np.float32)
        rewards = [single.step(action)[1] for _ in range(2)]
        _, reward, _, truncated, info = double.step(action)
        np.testing.assert_array_equal(info["state"], single.state_obs)  # two Meta-World steps per env step
        assert reward == pytest.approx(sum(rewards)) and not truncated
        double.step(action)
        assert double.step(action)[3]  # episode_length counts env steps: 3 of them, 6 Meta-World steps
    finally:
        single.close()
        double.close()
    with pytest.raises(UsageError, match="action_repeat"):
        MetaWorldImageEnv(DEFAULT_TASK, render=False, action_repeat=0)


def test_action_repeat_as_a_task_option_is_the_env_kwarg():
    """`--action-repeat N` (any task that takes it) and `--env-kwargs '{"action_repeat": N}'` build the same env."""
    from cmil.envs import make_env

    states = []
    for options in ({"action_repeat": 3, "env_kwargs": {"render": False}},
                    {"env_kwargs": {"render": False, "action_repeat": 3}}):
        env = make_env("mw-push", seed=4, **options)
        try:
            env.reset()
            states.append(env.step(np.full(4, 0.5, np.float32))[4]["state"])
        finally:
            env.close()
    np.testing.assert_array_equal(*states)


def test_demos_with_the_repeat_as_an_env_kwarg_warn_only_when_the_env_differs(tmp_path, capsys):
    """Demos collected with round 44's `{"action_repeat": 4}` build the same env as a run's `--action-repeat 4`: no
    warning. Another repeat is one warning, naming both repeats; the other kwargs are compared on their own."""
    import json

    from cmil.config import Config, replace
    from cmil.launch import _check_demo_env_options

    (tmp_path / "expert_stats.json").write_text(json.dumps(
        {"task": "mw-push", "env_kwargs": {"action_repeat": 4, "episode_length": 25}, "action_repeat": None}))
    run = replace(Config(), task="mw-push", env_kwargs='{"episode_length":25}')
    _check_demo_env_options(replace(run, action_repeat=4), tmp_path)
    assert capsys.readouterr().err == ""
    _check_demo_env_options(replace(run, action_repeat=2), tmp_path)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: the demos in {tmp_path} were collected with action repeat 4, this run uses 2: the expert's "
        "actions were held for another number of env steps; collect demos with the run's"]
    _check_demo_env_options(replace(run, env_kwargs='{"action_repeat":4}'), tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and 'env kwargs {"episode_length": 25}, this run uses {}' in err[0]
