"""Franka Kitchen: env contract, seeding, task-completion semantics, light rendering, expert."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("gymnasium_robotics")

from cmil.envs import kitchen as K  # noqa: E402
from cmil.envs import make_env, task_spec  # noqa: E402
from cmil.experts import make_expert  # noqa: E402

# D4RL goals of the four tasks, by qpos index (gymnasium-robotics' OBS_ELEMENT_INDICES/GOALS).
DONE = {22: -0.75, 17: -0.69, 18: -0.05, 19: 0.37}
KETTLE_GOAL = [-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]


@pytest.fixture(scope="module")
def env():
    """One env for the module (building one takes ~1 s); every test resets it first."""
    e = make_env("kitchen", seed=0)
    yield e
    e.close()


def _done_qpos(u: K.FrankaKitchenPixels, tasks: tuple[str, ...]) -> np.ndarray:
    """The current qpos with the objects of `tasks` moved to their goals."""
    qpos = u.data.qpos.copy()
    if "microwave" in tasks:
        qpos[22] = DONE[22]
    if "light switch" in tasks:
        qpos[17], qpos[18] = DONE[17], DONE[18]
    if "slide cabinet" in tasks:
        qpos[19] = DONE[19]
    if "kettle" in tasks:
        qpos[23:30] = KETTLE_GOAL
        qpos[26:30] /= np.linalg.norm(qpos[26:30])
    return qpos


def test_registry_and_contract(env):
    assert task_spec("kitchen").episode_length == K.EPISODE_LENGTH == 280
    u = env.unwrapped
    assert isinstance(u, K.FrankaKitchenPixels)
    assert u.robot.frame_skip == 40 and u.model.opt.timestep * 40 == pytest.approx(0.08)
    assert env.action_space.shape == (9,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset()
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3) and env.observation_space.contains(obs)
    assert obs.std() > 10  # a real picture, not a blank buffer
    assert info["success"] is False and info["tasks_completed"] == 0
    assert info["state"].dtype == np.float64 and info["state"].shape == (59,)
    obs, reward, terminated, truncated, info = env.step(np.full(9, 5.0))  # out-of-range actions are clipped
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert isinstance(reward, float) and reward == 0.0
    assert info["success"] is False and info["tasks_completed"] == 0
    assert not terminated and not truncated
    assert np.all(np.isfinite(info["state"]))


def test_fixed_length_truncation(env):
    u = env.unwrapped
    u.episode_length = 3
    try:
        env.reset()
        flags = [env.step(np.zeros(9))[2:4] for _ in range(3)]
        assert flags == [(False, False), (False, False), (False, True)]
    finally:
        u.episode_length = K.EPISODE_LENGTH


def test_seeding(env):
    u = env.unwrapped
    first, _ = env.reset(seed=0)
    q0 = u.data.qpos.copy()
    again, _ = env.reset(seed=0)
    assert np.array_equal(first, again) and np.array_equal(u.data.qpos, q0)
    a, _ = env.reset(seed=7)
    qa = u.data.qpos.copy()
    b, _ = env.reset(seed=7)
    assert np.array_equal(a, b) and np.array_equal(u.data.qpos, qa)
    # Different seeds perturb the initial arm joints (and only them) within init_noise.
    assert not np.allclose(qa[:7], q0[:7])
    assert np.abs(qa[:7] - q0[:7]).max() <= 2 * u.init_noise
    assert np.array_equal(qa[7:], q0[7:])


def test_threshold_semantics():
    qpos = np.zeros(30)
    qpos[23:30] = [-0.269, 0.35, 1.62, 1.0, 0.0, 0.0, 0.0]  # the kettle's initial pose
    assert not any(K.tasks_satisfied(qpos).values())
    # microwave: |q - (-0.75)| < 0.3
    qpos[22] = -0.75 + 0.29
    assert K.tasks_satisfied(qpos)["microwave"]
    qpos[22] = -0.75 + 0.31
    assert not K.tasks_satisfied(qpos)["microwave"]
    # kettle: L2 over its 7-dim pose (position and quaternion together)
    qpos[23:30] = KETTLE_GOAL
    qpos[24] -= 0.25
    assert K.task_distances(qpos)["kettle"] == pytest.approx(0.25)
    assert K.tasks_satisfied(qpos)["kettle"]
    qpos[24] -= 0.1
    assert not K.tasks_satisfied(qpos)["kettle"]


def test_success_from_hand_set_state(env):
    u = env.unwrapped
    for n in (1, 2, 3):  # partial states count their tasks
        env.reset(seed=1)
        u.set_sim_state(_done_qpos(u, K.TASKS[:n]))
        _, reward, _, _, info = env.step(np.zeros(9))
        assert info["tasks_completed"] == n and info["success"] is False and reward == n
        assert info["completed"] == list(K.TASKS[:n])
    env.reset(seed=1)
    u.set_sim_state(_done_qpos(u, K.TASKS))
    _, reward, _, _, info = env.step(np.zeros(9))
    assert info["tasks_completed"] == 4 and info["success"] is True and reward == 4.0
    # Completions are sticky: undoing the tasks keeps the episode's count (reward is current only).
    u.set_sim_state(u.kitchen.robot_env.init_qpos.copy())
    _, reward, _, _, info = env.step(np.zeros(9))
    assert info["tasks_completed"] == 4 and info["success"] is True and reward == 0.0
    _, info = env.reset(seed=1)
    assert info["tasks_completed"] == 0 and info["success"] is False


def test_oven_light_follows_switch(env):
    u = env.unwrapped
    env.reset(seed=0)
    off = u.render().astype(float)
    u.set_sim_state(_done_qpos(u, ("light switch",)))
    on = u.render().astype(float)
    # The light brightens the stove top (upper middle of the frame) only once the switch is on.
    assert (on - off)[10:40, 20:50].mean() > 5.0


def test_first_reset_uses_factory_seed(env):
    u = env.unwrapped
    u._first_seed = 5  # as if built by make_env("kitchen", seed=5)
    first, _ = env.reset()
    q_first = u.data.qpos.copy()
    env.reset()  # the factory seed is used once; later resets continue the generator
    assert not np.array_equal(u.data.qpos, q_first)
    again, _ = env.reset(seed=5)
    assert np.array_equal(first, again) and np.array_equal(u.data.qpos, q_first)


def test_second_rendering_env_refused(env):
    with pytest.raises(RuntimeError):
        make_env("kitchen")


def test_expert_opens_microwave_quickly(env):
    expert = make_expert("kitchen", env)
    env.reset(seed=3)
    expert.reset()
    for _ in range(60):
        _, _, _, _, info = env.step(expert.act())
        if "microwave" in info["completed"]:
            break
    assert "microwave" in info["completed"], "microwave not open after 60 steps"


def test_expert_actions_in_bounds(env):
    from cmil.experts.kitchen import make_kitchen_expert

    expert = make_kitchen_expert(env, noise_std=0.5, seed=0)
    env.reset(seed=0)
    expert.reset()
    for _ in range(5):
        a = expert.act()
        assert a.shape == (9,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
        env.step(a)


@pytest.mark.slow
def test_expert_completes_all_four(env):
    expert = make_expert("kitchen", env)
    for seed in (0, 1):
        env.reset(seed=seed)
        expert.reset()
        for _ in range(K.EPISODE_LENGTH):
            _, _, _, truncated, info = env.step(expert.act())
        assert truncated and info["success"] and info["tasks_completed"] == 4
