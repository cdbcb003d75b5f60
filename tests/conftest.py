import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from cmil.data.episodes import EpisodeRecorder
from cmil.envs import make_env
from cmil.evaluate import run_episode
from cmil.experts import make_expert


def record_episodes(task: str, n: int, seed: int = 0):
    """n expert episodes of `task` in the episode format."""
    env = make_env(task, seed=seed)
    expert = make_expert(task, env)
    episodes = []
    try:
        for i in range(n):
            rec = EpisodeRecorder()
            run_episode(env, lambda _o: expert.act(), expert.reset, seed=seed + i, recorder=rec)
            episodes.append(rec.finish())
    finally:
        env.close()
    return episodes


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
