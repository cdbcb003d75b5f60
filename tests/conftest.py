import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from cmil.envs import make_env
from cmil.evaluate import recorded_rollouts
from cmil.experts import make_expert


def record_episodes(task: str, n: int, seed: int = 0):
    """n expert episodes of `task` in the episode format."""
    env = make_env(task, seed=seed)
    expert = make_expert(task, env)
    try:
        return recorded_rollouts(env, lambda _o: expert.act(), expert.reset, range(seed, seed + n))
    finally:
        env.close()


@pytest.fixture
def point_episodes():
    return record_episodes("point", 3)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread (and OpenMP spinning hurts on a shared CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cmil_on_point(point_episodes):
    """A CMIL (dry-run sizes, `default` preset) on the point task with its expert and replay buffers filled from
    `point_episodes`: (method, expert, replay)."""
    import torch

    from cmil.config import replace
    from cmil.data.replay import SequenceReplay
    from cmil.methods.cmil import CMIL
    from cmil.presets import PRESETS, dry_run_config

    # The paper's forms (the CPU preset's rescalings off); tests of those options switch them on.
    cfg = replace(dry_run_config(PRESETS["default"]), task="point", **{
        "agent.target_update_every": 2, "agent.disc_input_norm": False, "agent.penalty_norm": False,
        "agent.return_norm": False, "agent.bc_loss": "nll", "agent.bc_model_weight": 0.0,
        "agent.bc_action_noise": 0.0, "agent.bc_fit_std": False, "wm.posterior": "filter",
        "wm.agent_feat": "sample", "wm.augment": False, "cover_edges": False, "agent.policy_ema": 0.0,
        "agent.anchor_weight": 0.0, "agent.anchor_target": "pretrained"})
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device("cpu"))
    expert = SequenceReplay(cfg.seq_len, seed=0)
    replay = SequenceReplay(cfg.seq_len, seed=1)
    for ep in point_episodes:
        expert.add_episode(ep)
        replay.add_episode(ep)
    return method, expert, replay
