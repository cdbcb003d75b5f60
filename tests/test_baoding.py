"""The Baoding task: env contract, drop rule, target trajectory, success semantics, expert interface."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("gymnasium_robotics")

from cmil.envs import baoding as B  # noqa: E402
from cmil.envs import make_env, task_spec  # noqa: E402
from cmil.experts import make_expert  # noqa: E402


@pytest.fixture
def env():
    e = make_env("baoding", seed=0)
    yield e
    e.close()


def _place_balls(u: B.BaodingEnv, xy: np.ndarray) -> None:
    """Teleport both balls to `xy` (2, 2), resting on the palm, at rest."""
    import mujoco

    for k, (qa, va) in enumerate(zip(u._ball_qpos, u._ball_qvel, strict=True)):
        u.data.qpos[qa:qa + 3] = [*xy[k], B.PALM_CENTRE[2] + B.BALL_RADIUS + 0.001]
        u.data.qpos[qa + 3:qa + 7] = [1, 0, 0, 0]
        u.data.qvel[va:va + 6] = 0
    mujoco.mj_forward(u.model, u.data)


def test_registry_and_contract(env):
    spec = task_spec("baoding")
    assert spec.episode_length == B.EPISODE_LENGTH == 75
    u = env.unwrapped
    assert env.action_space.shape == (u.model.nu,) == (20,)
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3) and env.observation_space.contains(obs)
    assert obs.std() > 5  # a real picture, not a blank buffer
    for key in ("success", "state", "target_distance", "dropped"):
        assert key in info
    assert info["success"] is False and info["dropped"] is False
    assert info["state"].dtype == np.float64
    assert info["target_distance"] < 0.01  # the balls start on their targets
    obs, reward, terminated, truncated, info = env.step(u.home_action)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert isinstance(reward, float) and isinstance(info["success"], bool)
    assert not terminated and not truncated


def test_physics_timing_and_action_mapping(env):
    u = env.unwrapped
    assert u.model.opt.timestep == pytest.approx(B.TIMESTEP)
    assert B.TIMESTEP * B.FRAME_SKIP == pytest.approx(0.1)
    env.reset(seed=0)
    t0 = u.data.time
    env.step(np.zeros(20, np.float32))
    assert u.data.time - t0 == pytest.approx(0.1)
    np.testing.assert_allclose(u.data.ctrl, u.model.actuator_ctrlrange.mean(1))
    np.testing.assert_allclose(u.action_to_ctrl(-np.ones(20)), u.model.actuator_ctrlrange[:, 0])
    np.testing.assert_allclose(u.action_to_ctrl(np.ones(20)), u.model.actuator_ctrlrange[:, 1])
    np.testing.assert_allclose(u.action_to_ctrl(u.ctrl_to_action(u.home_ctrl())), u.home_ctrl(), atol=1e-6)


def test_seeding_reproduces_first_frame():
    env = make_env("baoding", seed=7)
    try:
        first, info0 = env.reset()  # the factory's seed seeds the first reset
        other, _ = env.reset(seed=8)
        again, info1 = env.reset(seed=7)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(info0["state"], info1["state"])
        assert not np.array_equal(first, other)
    finally:
        env.close()


def test_target_trajectory_one_ccw_revolution_per_60_steps():
    phase = 0.3
    t0, t30, t60 = (B.target_positions(s, phase) for s in (0, 30, 60))
    np.testing.assert_allclose(t0, t60, atol=1e-12)
    np.testing.assert_allclose(t30, t0[::-1], atol=1e-12)  # half a turn swaps the balls' targets
    for s in range(60):
        tg = B.target_positions(s, phase)
        np.testing.assert_allclose(tg.mean(0), B.TARGET_CENTRE, atol=1e-12)  # opposite each other
        np.testing.assert_allclose(np.linalg.norm(tg - B.TARGET_CENTRE, axis=1), B.TARGET_RADIUS)
        a, b = tg[0] - B.TARGET_CENTRE, B.target_positions(s + 1, phase)[0] - B.TARGET_CENTRE
        assert a[0] * b[1] - a[1] * b[0] > 0  # counter-clockwise seen from +z
    # the angle swept in 60 steps is exactly one turn
    angles = [np.arctan2(*(B.target_positions(s, phase)[0] - B.TARGET_CENTRE)[::-1]) for s in range(61)]
    assert np.unwrap(angles)[-1] - angles[0] == pytest.approx(2 * np.pi)


def test_dropped_ball_terminates_without_success(env):
    u = env.unwrapped
    env.reset(seed=0)
    qa = u._ball_qpos[0]
    u.data.qpos[qa + 2] = B.DROP_Z - 0.02
    obs, reward, terminated, truncated, info = env.step(u.home_action)
    assert terminated and not truncated
    assert info["dropped"] and not info["success"]
    assert reward <= -500
    with pytest.raises(RuntimeError):
        env.step(u.home_action)


def test_balls_on_targets_read_as_success():
    env = make_env("baoding", seed=0, max_episode_steps=6)
    try:
        u = env.unwrapped
        env.reset(seed=0)
        for t in range(6):
            # hold the balls on the targets they should reach after this step
            _place_balls(u, u.targets(t + 1))
            _, reward, terminated, truncated, info = env.step(u.home_action)
            assert info["target_distance"] < 0.01 and not terminated
            assert reward > -1.0
            assert info["success"] == (t == 5)  # success is only reported at the episode's end
        assert truncated and info["criterion_so_far"]
        # six steps of a 60-step revolution (give or take the 2 mm noise of the reset placement)
        assert info["rotation"] == pytest.approx(2 * np.pi * 6 / 60, abs=0.15)
        # the same hand with the balls parked off target fails the criterion
        env.reset(seed=0)
        for t in range(6):
            _place_balls(u, u.targets(t + 1) + np.array([0.0, 0.03]))
            _, _, _, truncated, info = env.step(u.home_action)
        assert truncated and not info["success"] and info["mean_target_distance"] > B.SUCCESS_DISTANCE
    finally:
        env.close()


def test_episode_criterion():
    full_turn = 2 * np.pi * 75 / 60  # what the targets turn in an episode
    assert B.episode_criterion(0.006, dropped=False, rotation=7.0, steps=75)  # the paper's experts
    assert not B.episode_criterion(0.006, dropped=True, rotation=7.0, steps=75)
    assert not B.episode_criterion(B.SUCCESS_DISTANCE + 1e-4, dropped=False, rotation=7.0, steps=75)
    # half a turn backwards puts each ball back on its own target: not a success
    assert not B.episode_criterion(0.006, dropped=False, rotation=full_turn - 2 * np.pi, steps=75)
    assert B.required_rotation(75) == pytest.approx(full_turn - np.pi)
    assert B.oracle_reward(0.01, 0.02, False, False) == pytest.approx(-0.15)
    assert B.oracle_reward(0.0, 0.0, True, True) == pytest.approx(-510.0)


def test_expert_follows_the_targets(env):
    """15 steps (a quarter turn, ~2 s): the expert keeps both balls near their moving targets, while
    holding the resting posture lets them fall behind."""
    expert = make_expert("baoding", env)
    for policy in ("expert", "home"):
        env.reset(seed=3)
        expert.reset()
        for _ in range(15):
            a = expert.act() if policy == "expert" else env.unwrapped.home_action
            assert a.shape == (20,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
            _, _, terminated, _, info = env.step(a)
            assert not terminated
        if policy == "expert":
            assert info["mean_target_distance"] < 0.008 and info["rotation"] > 1.0
        else:
            assert info["mean_target_distance"] > 0.01


@pytest.mark.slow
def test_expert_tracks_targets():
    """A few full expert episodes (about a minute each on one core)."""
    env = make_env("baoding")
    try:
        expert = make_expert("baoding", env)
        wins = 0
        for seed in range(3):
            env.reset(seed=100 + seed)
            expert.reset()
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(expert.act())
                done = terminated or truncated
            wins += info["success"]
        assert wins >= 2
    finally:
        env.close()
