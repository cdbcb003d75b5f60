"""`gym:ID` tasks: the PixelTask adapter's contract, its refusals, and the commands on a gymnasium id."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import gym_helpers  # noqa: F401  (registers the CmilTest/* envs)
from cmil.cli import main
from cmil.envs import make_env, reports_success
from cmil.envs.gym_task import DEFAULT_MAX_EPISODE_STEPS, resize_frame
from cmil.errors import UsageError
from cmil.evaluate import evaluate

LIMITED = "gym:CmilTest/SlideLimited-v0"
CLI_TASK = "gym:gym_helpers:CmilTest/SlideLimited-v0"  # imports the module that registers the id


def test_contract_frames_actions_success():
    env = make_env(LIMITED, seed=3)
    try:
        obs, info = env.reset()
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 5
        assert env.observation_space.shape == (64, 64, 3)
        assert env.action_space.dtype == np.float32 and np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
        assert info["success"] is False and info["state"].shape == (4,) and reports_success(env)
        # [-1, 1] maps onto the env's own [-2, 2] and back.
        to_native, to_unit = env.get_wrapper_attr("to_native"), env.get_wrapper_attr("to_unit")
        np.testing.assert_allclose(to_native(np.array([-1.0, 0.5])), [-2.0, 1.0])
        np.testing.assert_allclose(to_unit(np.array([-2.0, 1.0])), [-1.0, 0.5])
        np.testing.assert_allclose(to_unit(np.array([5.0, -5.0])), [1.0, -1.0])  # clipped
        steps, done = 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(np.ones(2, np.float32))
            steps += 1
            done = terminated or truncated
        assert steps == 25 and truncated and isinstance(info["success"], bool)  # the env's own limit
    finally:
        env.close()


def test_seed_reproduces_first_frame():
    frames = []
    for _ in range(2):
        env = make_env(LIMITED, seed=11)
        frames.append(env.reset()[0])
        env.close()
    np.testing.assert_array_equal(*frames)


def test_time_limit_cap_and_override():
    env = make_env("gym:CmilTest/Slide-v0")  # registered without a limit
    env.reset(seed=0)
    steps = 0
    while not any(env.step(np.zeros(2, np.float32))[2:4]):
        steps += 1
    env.close()
    assert steps + 1 == DEFAULT_MAX_EPISODE_STEPS
    env = make_env(LIMITED, max_episode_steps=7)  # replaces the registered 25
    env.reset(seed=0)
    assert [any(env.step(np.zeros(2, np.float32))[2:4]) for _ in range(7)] == [False] * 6 + [True]
    env.close()


def test_action_repeat_holds_the_action_and_counts_the_limit_in_the_envs_own_steps():
    action = np.array([0.3, -0.2], np.float32)
    env = make_env(LIMITED, seed=5)  # one rendering env at a time (RendererGuard)
    env.reset()
    rewards = [env.step(action)[1] for _ in range(3)]
    state = env.step(np.zeros(2, np.float32))[4]["state"]  # a zero action moves nothing
    env.close()
    env = make_env(LIMITED, seed=5, action_repeat=3)
    try:
        env.reset()
        frame, reward, _, _, info = env.step(action)
        np.testing.assert_array_equal(info["state"], state)
        assert reward == pytest.approx(sum(rewards)) and frame.shape == (64, 64, 3)
        steps = 1
        while not any(env.step(action)[2:4]):
            steps += 1
        assert steps + 1 == 9  # the registered 25 env steps: 8 held actions of 3, then one of 1
    finally:
        env.close()
    with pytest.raises(UsageError, match="action_repeat must be a whole number >= 1"):
        make_env(LIMITED, action_repeat=0)
    with pytest.raises(UsageError, match="action_repeat: task 'point' does not take them"):
        make_env("point", action_repeat=2)
    with pytest.raises(UsageError, match="given both as a task option and in env_kwargs"):
        make_env("mw-push", env_kwargs={"action_repeat": 2}, action_repeat=2)


def test_success_keys_and_return_only():
    env = make_env("gym:CmilTest/SlideIsSuccess-v0")
    assert reports_success(env) and env.get_wrapper_attr("success_key") == "is_success"
    env.close()
    env = make_env(LIMITED, success_key="distance")  # any info key the user names
    assert env.get_wrapper_attr("success_key") == "distance"
    env.close()
    env = make_env("gym:CmilTest/SlideNoSuccess-v0")
    assert not reports_success(env)

    class Still:
        def reset(self):
            pass

        def act(self, obs, deterministic):
            return np.zeros(2, np.float32)

    metrics = evaluate(env, Still(), episodes=2, seed=0)
    env.close()
    assert "eval/success_rate" not in metrics and metrics["eval/length"] == 25.0


@pytest.mark.parametrize("task, options, message", [
    ("gym:CmilTest/Discrete-v0", {}, "is not a continuous Box"),
    ("gym:CmilTest/Unbounded-v0", {}, "is unbounded"),
    ("gym:CmilTest/NoRender-v0", {}, "render"),
    ("gym:CmilTest/Nope-v0", {}, "doesn't exist"),
    (LIMITED, {"success_key": "nope"}, "no info['nope']"),
    (LIMITED, {"env_kwargs": {"wrong": 1}}, "env_kwargs"),
])
def test_clear_errors(task, options, message):
    with pytest.raises(UsageError, match=None) as err:
        make_env(task, **options)
    assert message in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    from cmil.envs.rendering import RendererGuard

    assert not RendererGuard.busy()  # a refused env is closed again


def test_resize_is_an_area_filter():
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[::2, ::2] = 255  # a fine checkerboard: nearest-neighbour sampling would give all 255 or all 0
    small = resize_frame(frame, 64)
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8
    assert np.all(np.abs(small.astype(int) - 64) <= 1)  # one bright pixel in every 2x2 block
    wide = resize_frame(np.full((30, 50, 4), 0.5, np.float32), 64)  # float RGBA, non-square, enlarged
    assert wide.shape == (64, 64, 3) and np.all(np.abs(wide.astype(int) - 128) <= 1)


def _train(run: Path, demos: Path, *extra: str) -> int:
    return main(["train", "--task", CLI_TASK, "--method", "bc", "--dry-run", "--demos", str(demos),
                 "--run-dir", str(run), *extra])


def test_cli_collect_train_resume_eval(tmp_path, capsys):
    demos = tmp_path / "demos"
    assert main(["demos", "collect", "--task", CLI_TASK, "--episodes", "3", "--out", str(demos),
                 "--expert", "gym_helpers:slide_expert", "--env-kwargs", '{"goal_radius": 0.2}']) == 0
    stats = json.loads((demos / "expert_stats.json").read_text())
    assert stats["success_rate"] > 0.5 and stats["env_kwargs"] == {"goal_radius": 0.2}
    assert main(["demos", "show", str(demos), "--task", CLI_TASK]) == 0
    assert main(["demos", "show", str(demos), "--task", "point"]) == 0  # point also has 2-D actions
    assert main(["demos", "show", str(demos), "--task", "mw-push"]) == 2  # 4-D actions
    assert "action dimension is 2, expected 4" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _train(run, demos, "--env-kwargs", '{"goal_radius": 0.2}', "--success-key", "success") == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["task"] == CLI_TASK and cfg["env_kwargs"] == '{"goal_radius":0.2}' and cfg["success_key"] == "success"
    capsys.readouterr()
    # The same arguments spelled differently resume (here: report) the finished run; other values conflict.
    assert _train(run, demos, "--env-kwargs", '{ "goal_radius" : 0.2 }', "--success-key", "success") == 0
    assert "already finished" in capsys.readouterr().out
    assert _train(run, demos, "--env-kwargs", '{"goal_radius": 0.3}', "--success-key", "success") == 2
    assert "env_kwargs: run has" in capsys.readouterr().err
    # `cmil eval` rebuilds the env from config.yaml alone.
    assert main(["eval", str(run), "--episodes", "2", "--video-episodes", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["eval/episodes"] == 2.0
    # An action repeat is saved too, and demos held for another number of steps are named in a warning.
    held = tmp_path / "held"
    assert _train(held, demos, "--env-kwargs", '{"goal_radius": 0.2}', "--action-repeat", "2") == 0
    assert yaml.safe_load((held / "config.yaml").read_text())["action_repeat"] == 2
    assert "collected with action repeat 1, this run uses 2" in capsys.readouterr().err
    assert _train(held, demos, "--env-kwargs", '{"goal_radius": 0.2}', "--action-repeat", "3") == 2
    assert "action_repeat: run has" in capsys.readouterr().err


def test_cli_return_only_task(tmp_path, capsys):
    task = "gym:gym_helpers:CmilTest/SlideNoSuccess-v0"
    demos = tmp_path / "demos"
    assert main(["demos", "collect", "--task", task, "--episodes", "2", "--out", str(demos),
                 "--expert", "gym_helpers:slide_expert"]) == 0
    assert json.loads((demos / "expert_stats.json").read_text())["success_rate"] is None
    run = tmp_path / "run"
    assert main(["train", "--task", task, "--method", "bc", "--dry-run", "--demos", str(demos), "--run-dir", str(run)]) == 0
    assert "no success signal" in capsys.readouterr().out
    final = json.loads((run / "final.json").read_text())
    assert final["success_rate"] is None and final["expert_success_rate"] is None


def test_cli_bad_gym_inputs_write_nothing(tmp_path, capsys):
    demos = tmp_path / "demos"
    cases = [
        (["train", "--task", "gym:CmilTest/Discrete-v0", "--method", "bc", "--dry-run", "--run-dir", str(tmp_path / "r")],
         "is not a continuous Box"),
        (["train", "--task", CLI_TASK, "--method", "bc", "--dry-run", "--run-dir", str(tmp_path / "r")],
         "has none; pass --demos"),
        (["train", "--task", CLI_TASK, "--method", "bc", "--env-kwargs", "[1]", "--run-dir", str(tmp_path / "r")],
         "env_kwargs must be a JSON object"),
        (["train", "--task", "mw-push", "--method", "bc", "--success-key", "x", "--dry-run", "--run-dir", str(tmp_path / "r")],
         "are for gym:ID tasks"),
        (["demos", "collect", "--task", CLI_TASK, "--episodes", "1", "--out", str(demos)], "has no expert"),
        (["demos", "collect", "--task", CLI_TASK, "--episodes", "1", "--out", str(demos), "--expert", "gym_helpers:nope"],
         "cannot load it"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_sweep_trials_of_a_gym_task(tmp_path):
    from cmil.sweep import build_trials, parse_set

    overrides = parse_set(['env_kwargs={"goal_radius": 0.2}'])  # YAML reads the JSON object as a mapping
    trials = build_trials([CLI_TASK], ["bc"], [0], overrides, [{}], "default", True, tmp_path, "demos/{task}", 1, 0)
    assert trials[0]["name"].startswith("gym-gym_helpers-CmilTest-SlideLimited-v0__bc__")
    assert json.loads(trials[0]["config"]["env_kwargs"]) == {"goal_radius": 0.2}


def test_a_closed_mujoco_env_does_not_blank_the_next():
    """gymnasium's MuJoCo renderer leaves its GL resources to the garbage collector; PixelTask.close frees
    them, else collecting the closed env (here: when `env` is rebound) blanks the next env's frames."""
    kwargs = {"width": 64, "height": 64}
    env = make_env("gym:Reacher-v5", seed=0, env_kwargs=kwargs)
    env.reset()
    env.close()
    env = make_env("gym:Reacher-v5", seed=0, env_kwargs=kwargs)  # the first env is collected only now
    try:
        frames = [env.reset()[0]] + [env.step(np.zeros(2, np.float32))[0] for _ in range(3)]
        assert all(f.std() > 5 for f in frames)
    finally:
        env.close()


def test_a_users_expert_from_a_file():
    from cmil.envs import load_factory

    expert = load_factory("examples/fetch_reach/expert.py:reach_expert")
    obs = {"observation": np.array([1.0, 0.5, 0.4, *np.zeros(7)]), "desired_goal": np.array([1.02, 0.5, 0.3])}
    np.testing.assert_allclose(expert(obs), [0.2, 0.0, -1.0, 0.0], atol=1e-6)
    with pytest.raises(UsageError, match="cannot load it"):
        load_factory("examples/nope.py:f")
