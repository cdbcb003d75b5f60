"""agent.self_imitation: D ranks the online episodes, the top ones' windows join the BC term, off by default."""

import json

import numpy as np
import pytest
import torch

from cmil.config import replace
from cmil.config_io import validate
from cmil.data.replay import SequenceReplay
from cmil.errors import ConfigError
from cmil.methods.cmil import CMIL
from cmil.presets import PRESETS, dry_run_config


@pytest.fixture
def parts(point_episodes):
    cfg = replace(dry_run_config(PRESETS["default"]), task="point", batch_size=4, **{
        "agent.self_imitation": 0.5, "agent.self_imitation_every": 1, "agent.self_imitation_last": 3})
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device("cpu"))
    expert = SequenceReplay(cfg.seq_len, seed=0)
    replay = SequenceReplay(cfg.seq_len, seed=1)
    for i, ep in enumerate(point_episodes):
        expert.add_episode(ep)
        marked = {k: v.copy() for k, v in ep.items()}
        marked["action"][:, 0] = 0.1 * i          # episode i's actions say i (D below reads them)
        marked["success"][:] = i == 2
        replay.add_episode(marked)
    # A discriminator whose logit is the action's first component: episode 2 looks the most expert-like.
    # (D still trains: its own logit enters with weight 0.)
    real = method.imitation.logit
    method.imitation.logit = lambda feat, action, noise=False: 0 * real(feat, action, noise) + action[..., 0]
    return method, expert, replay


def test_ranking_selects_the_top_fraction_by_discriminator(parts):
    method, expert, replay = parts
    m = method.update(expert, replay)
    # ceil(0.5 x 3) = 2 episodes: the two whose last actions D scores highest; success read for the log only.
    assert method._self_demos["ids"] == [1, 2]
    assert m["self_imitation/selected"] == 2 and m["self_imitation/selected_success"] == 0.5
    assert m["self_imitation/all_success"] == pytest.approx(1 / 3)
    assert m["train/self_demo_windows"] == 2          # half of the batch of 4
    # The selected windows lead the replay batch and come only from episodes 1 and 2.
    batch = method._replay_batch(replay, 4, online=True)
    assert batch["self_demo"].tolist() == [1, 1, 0, 0]
    firsts = batch["action"][:2, 1:, 0]
    assert np.all(np.isclose(firsts, 0.1) | np.isclose(firsts, 0.2))
    # Re-ranked only after self_imitation_every more episodes; the selection is checkpointed.
    ranked_at = method._self_demos["ranked_at"]
    method.update(expert, replay)
    assert method._self_demos["ranked_at"] == ranked_at
    assert json.loads(method.extra_state()["_self_demos"])["ids"] == [1, 2]
    resumed = CMIL(method.cfg, 2, torch.device("cpu"))
    resumed.load_extra_state(method.extra_state())
    assert resumed.selection.state == method.selection.state


def test_success_ranking_is_the_upper_bound_measurement(parts):
    method, expert, replay = parts
    method.cfg = replace(method.cfg, **{"agent.self_imitation_rank": "success", "agent.self_imitation": 0.2})
    method.imitation.logit = lambda feat, action, noise=False: -action[..., 0]   # D would pick episode 0
    method.selection.rank(replay)
    assert method._self_demos["ids"] == [2] and method._self_demos["selected_success"] == 1.0


def test_selected_windows_weigh_in_the_bc_term_as_demonstrations(parts):
    method = parts[0]
    feat = torch.randn(4, 3, method.wm.agent_feat_dim)
    action = torch.rand(4, 3, 2) * 2 - 1
    weighted = method.bc_loss(feat, action, weight=torch.tensor([1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(weighted, method.bc_loss(feat[:3], action[:3]))


def test_not_in_pretraining_and_off_by_default(parts, point_episodes):
    method, expert, replay = parts
    method.pretrain(expert, lambda n: None)       # pretraining's batches are the demos' own: nothing is ranked
    assert method._self_demos == {}
    batch = method._replay_batch(replay, 4, online=False)
    assert batch["self_demo"].tolist() == [0, 0, 0, 0]
    cfg = replace(method.cfg, **{"agent.self_imitation": 0.0})
    plain = CMIL(cfg, 2, torch.device("cpu"))
    assert "self_demo" not in plain._replay_batch(replay, 4, online=True)
    assert "train/self_demo_windows" not in plain.update(expert, replay) and plain.selection is None


def test_config_checks():
    cfg = dry_run_config(PRESETS["default"])
    with pytest.raises(ConfigError, match="self_imitation"):
        validate(replace(cfg, **{"agent.self_imitation": 1.5}))
    with pytest.raises(ConfigError, match="bc_frame_shift"):
        validate(replace(cfg, **{"agent.self_imitation": 0.2, "agent.bc_frame_shift": True}))
    with pytest.raises(ConfigError, match="self_imitation_windows"):
        validate(replace(cfg, **{"agent.self_imitation": 0.2, "agent.self_imitation_windows": cfg.batch_size + 1}))
    validate(replace(cfg, **{"agent.self_imitation": 0.2}))
