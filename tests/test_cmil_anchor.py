"""CMIL's anchor and its pixel BC teacher: the anchor's pull towards the pretrained policy or the teacher, the
critics' filter on it, the teacher's labels and training order, the representation terms it drives, and `bc.members`."""

import copy

import numpy as np
import pytest
import torch

from cmil.config import replace
from cmil.config_io import validate
from cmil.data.replay import SequenceReplay, demo_pairs
from cmil.errors import ConfigError
from cmil.methods.bc import BC, PixelPolicy, PolicyEnsemble
from cmil.methods.cmil import CMIL


def test_anchor_pulls_the_online_actor_towards_the_pretrained_acting_policy(cmil_on_point):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2,
                  **{"agent.anchor_weight": 1.0, "agent.policy_ema": 0.5, "agent.beta": 0.0, "agent.grad_clip": 1e9})
    torch.manual_seed(0)
    anchored = CMIL(cfg, 2, torch.device("cpu"))
    assert "anchor_actor" in anchored.modules()
    anchored.pretrain(expert, lambda n: None)
    # The anchor is the acting (averaged) actor of the end of pretraining, not the live one.
    for key, value in anchored.anchor.state_dict().items():
        torch.testing.assert_close(value, anchored.policy_ema.module["actor"].state_dict()[key])
    assert not all(torch.equal(v, anchored.actor.state_dict()[k]) for k, v in anchored.anchor.state_dict().items())
    frozen_copy = copy.deepcopy(anchored.anchor.state_dict())
    # With beta = 0 the regularising part of the gradient is the anchor's alone, linear in its weight.
    parts = []
    for weight in (1.0, 2.0):
        twin, twin_replay, twin_expert = copy.deepcopy((anchored, replay, expert))
        twin.cfg = replace(twin.cfg, **{"agent.anchor_weight": weight})
        torch.manual_seed(1)
        m = twin.update(twin_expert, twin_replay)
        assert m["train/anchor_loss"] > 0
        parts.append(m["train/actor_grad_bc"])
        for key, value in twin.anchor.state_dict().items():  # the anchor itself never trains
            torch.testing.assert_close(value, frozen_copy[key], rtol=0, atol=0)
    assert parts[0] > 0 and parts[1] == pytest.approx(2 * parts[0], rel=1e-4)
    # Off (the authors' form): no anchor module, no anchor term.
    assert "anchor_actor" not in method.modules() and "train/anchor_loss" not in method.update(expert, replay)


def test_anchor_filter_q_keeps_the_anchor_only_where_the_critics_rate_its_target_higher(cmil_on_point):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2,
                  **{"agent.anchor_weight": 1.0, "agent.policy_ema": 0.5, "agent.beta": 0.0, "agent.grad_clip": 1e9})
    torch.manual_seed(0)
    anchored = CMIL(cfg, 2, torch.device("cpu"))
    anchored.pretrain(expert, lambda n: None)
    # The filter itself: a critic rising with the first action dimension keeps the states whose target is higher there.
    forward = anchored.critic.forward
    anchored.critic.forward = lambda feat, action: 0 * forward(feat, action) + 3.0 * action[..., 0]
    feat, mean = torch.randn(4, anchored.wm.agent_feat_dim), torch.zeros(4, 2)
    target = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.1, -0.9], [-0.1, 0.9]])
    assert anchored._anchor_kept(feat, target, mean).tolist() == [1.0, 0.0, 1.0, 0.0]
    anchored.critic.forward = forward

    def update(filter_: str, critic) -> dict[str, float]:
        twin, twin_replay, twin_expert = copy.deepcopy((anchored, replay, expert))
        twin.cfg = replace(twin.cfg, **{"agent.anchor_filter": filter_})
        fwd = twin.critic.forward
        twin.critic.forward = lambda f, a: 0 * fwd(f, a) + critic(twin, f, a)
        torch.manual_seed(1)
        return twin.update(twin_expert, twin_replay)

    def flat(agent, f, a):
        return 0 * a.sum(-1)

    def peaked_at_actor(agent, f, a):  # the anchor's target never rates higher than the live actor's mean
        return -(a - agent.actor(f).mean.detach()).pow(2).sum(-1)

    plain = update("none", flat)
    assert "train/anchor_kept" not in plain and plain["train/actor_grad_bc"] > 0
    # Critics that rate every action alike keep every state: the update is the unfiltered one.
    constant = update("q", flat)
    assert constant["train/anchor_kept"] == 1 and constant["train/actor_grad_bc"] == plain["train/actor_grad_bc"]
    preferring_actor = update("q", peaked_at_actor)
    assert preferring_actor["train/anchor_kept"] == 0 and preferring_actor["train/actor_grad_bc"] == 0
    with pytest.raises(ConfigError, match="anchor_filter"):
        validate(replace(method.cfg, **{"agent.anchor_filter": "q", "agent.anchor_weight": 0.0}))


def test_a_bc_teacher_is_the_anchors_target_on_the_replays_own_frames(cmil_on_point, point_episodes):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2, anchor_from="runs/a_bc_run",
                  **{"agent.anchor_weight": 1.0, "agent.anchor_target": "bc", "agent.beta": 0.0})
    torch.manual_seed(0)
    taught = CMIL(cfg, 2, torch.device("cpu"))
    assert "anchor_teacher" in taught.modules() and taught.anchor is None
    taught.pretrain(expert, lambda n: None)
    seen, target = [], torch.tensor([0.3, -0.2])

    def teacher(image):  # records what the teacher is shown and answers a fixed action
        seen.append(image.clone())
        return target.expand(*image.shape[:-3], 2)

    # Its target and a pretrained anchor answering the same action give the same update.
    twin = copy.deepcopy(taught)
    twin._teacher, twin.anchor = None, lambda feat: type("Dist", (), {"mean": target.expand(*feat.shape[:-1], 2)})
    frozen_teacher = copy.deepcopy(taught.teacher.state_dict())
    taught.teacher.forward = teacher
    results = []
    for m in (taught, twin):
        torch.manual_seed(1)
        results.append(m.update(expert, copy.deepcopy(replay)))
    assert results[0]["train/anchor_loss"] == pytest.approx(results[1]["train/anchor_loss"], rel=1e-6)
    for key, value in twin.actor.state_dict().items():
        torch.testing.assert_close(taught.actor.state_dict()[key], value, rtol=0, atol=1e-4)  # float rounding
    # It reads the replay windows' frames (uint8, all but the last of each window), and never trains.
    (image,) = seen
    B, L = cfg.batch_size, cfg.seq_len
    assert image.dtype == torch.uint8 and image.shape[:2] == (B, L - 1)
    stored = np.concatenate([ep["image"] for ep in point_episodes])
    assert all((stored == frame.numpy()).all(axis=(1, 2, 3)).any() for frame in image.flatten(0, 1))
    for key, value in taught.teacher.state_dict().items():
        torch.testing.assert_close(value, frozen_teacher[key], rtol=0, atol=0)


def test_the_teachers_labels_are_computed_once_as_episodes_enter_the_replay(cmil_on_point, point_episodes):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2, anchor_from="runs/a_bc_run",
                  **{"agent.anchor_weight": 1.0, "agent.anchor_target": "bc"})
    torch.manual_seed(0)
    taught = CMIL(cfg, 2, torch.device("cpu"))
    taught.pretrain(expert, lambda n: None)
    assert taught.replay_keys == ("teacher_action",)
    labelled = SequenceReplay(cfg.seq_len, seed=1, extra_keys=taught.replay_keys)
    for ep in point_episodes:
        stored = taught.label_episode(ep)
        assert "teacher_action" not in ep  # the episode as played (its file) stays as it was
        with torch.no_grad():
            torch.testing.assert_close(torch.as_tensor(stored["teacher_action"]),
                                       taught.teacher(torch.as_tensor(ep["image"])), rtol=0, atol=1e-6)
        labelled.add_episode(stored)
    with pytest.raises(ValueError, match="lacks the labels"):
        labelled.add_episode(point_episodes[0])
    # The update reads the stored labels (the teacher answers nothing then) and equals the one that asks it.
    twin = copy.deepcopy(taught)
    calls = []
    forward = taught.teacher.forward
    taught.teacher.forward = lambda image: calls.append(image) or forward(image)
    results = []
    for run, rep in ((taught, labelled), (twin, replay)):
        torch.manual_seed(1)
        results.append(run.update(copy.deepcopy(expert), copy.deepcopy(rep)))
    assert not calls
    assert results[0]["train/anchor_loss"] == pytest.approx(results[1]["train/anchor_loss"], rel=1e-5)
    for key, value in twin.actor.state_dict().items():
        torch.testing.assert_close(taught.actor.state_dict()[key], value, rtol=0, atol=1e-5)


def test_anchor_model_weight_fits_the_representation_to_the_teacher_at_the_policys_states(cmil_on_point):
    method, expert, replay = cmil_on_point
    # The actor never steps (its lr set to 0), so only the world model can bring its answer on the replay's states to the
    # teacher's: with agent.anchor_model_weight it does; without, the anchor's error stays where it was.
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2, anchor_from="runs/a_bc_run",
                  **{"agent.anchor_weight": 1.0, "agent.anchor_target": "bc", "agent.beta": 0.0, "wm.lr": 1e-3})
    target = torch.tensor([0.6, -0.5])
    errors = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        run = CMIL(replace(cfg, **{"agent.anchor_model_weight": weight}), 2, torch.device("cpu"))
        run.pretrain(copy.deepcopy(expert), lambda n: None)
        run.teacher.forward = lambda image: target.expand(*image.shape[:-3], 2)
        for group in run.actor_opt.param_groups:
            group["lr"] = 0.0
        actor = copy.deepcopy(run.actor.state_dict())
        torch.manual_seed(1)
        metrics = [run.update(expert, replay) for _ in range(40)]
        assert ("model/anchor_loss" in metrics[0]) == bool(weight)
        errors[weight] = [m["train/anchor_loss"] for m in metrics]
        for key, value in run.actor.state_dict().items():
            torch.testing.assert_close(value, actor[key], rtol=0, atol=0)
    assert np.mean(errors[100.0][-5:]) < 0.5 * np.mean(errors[100.0][:5])
    assert np.mean(errors[100.0][-5:]) < 0.5 * np.mean(errors[0.0][-5:])


def test_teacher_embed_weight_distils_the_teachers_embedding_into_the_representation(cmil_on_point):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, pretrain_updates=0, pretrain_bc_updates=2, anchor_from="runs/a_bc_run",
                  **{"agent.anchor_weight": 1.0, "agent.anchor_target": "bc"})
    with pytest.raises(ConfigError, match="teacher_embed_weight"):
        CMIL(replace(cfg, **{"agent.teacher_embed_weight": 1.0, "agent.anchor_weight": 0.0}), 2, torch.device("cpu"))
    # The embedding is what the teacher's action is a linear readout of.
    torch.manual_seed(0)
    teacher = CMIL(cfg, 2, torch.device("cpu")).teacher
    images = torch.as_tensor(np.stack([expert.episodes[0]["image"][:3]]))
    head = teacher.head[-1]
    torch.testing.assert_close(teacher(images), torch.tanh(head(teacher.embed(images))), rtol=0, atol=1e-6)
    assert teacher.embed(images).shape == (1, 3, cfg.bc.units)
    # One update from the same state and seed: the term reaches the representation, never the teacher.
    runs = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        runs[weight] = run = CMIL(replace(cfg, **{"agent.teacher_embed_weight": weight}), 2, torch.device("cpu"))
        assert ("teacher_embed_head" in run.modules()) == bool(weight)
        run.pretrain(copy.deepcopy(expert), lambda n: None)
        frozen_teacher = copy.deepcopy(run.teacher.state_dict())
        torch.manual_seed(1)
        metrics = run.update(copy.deepcopy(expert), copy.deepcopy(replay))
        assert ("model/teacher_embed_loss" in metrics) == bool(weight)
        for key, value in run.teacher.state_dict().items():
            torch.testing.assert_close(value, frozen_teacher[key], rtol=0, atol=0)
    encoder = {k: v for k, v in runs[0.0].wm.state_dict().items() if k.startswith("encoder")}
    assert encoder and not all(torch.equal(v, runs[10.0].wm.state_dict()[k]) for k, v in encoder.items())


def test_the_anchors_bc_teacher_trains_first_in_pretraining_on_its_own_generator(cmil_on_point):
    method, expert, _ = cmil_on_point
    base = replace(method.cfg, pretrain_updates=1, pretrain_bc_updates=2, **{"bc.steps": 30, "agent.anchor_weight": 1.0})
    runs = {}
    for target in ("pretrained", "bc"):
        torch.manual_seed(0)
        runs[target] = CMIL(replace(base, **{"agent.anchor_target": target}), 2, torch.device("cpu"))
    taught = runs["bc"]
    assert taught.pretrain_steps() == 30 + 3 and runs["pretrained"].pretrain_steps() == 3
    images, actions = (torch.as_tensor(x) for x in demo_pairs(expert))
    before = (taught.teacher(images) - actions).pow(2).sum(-1).mean()
    steps = []
    torch.manual_seed(1)
    metrics = taught.pretrain(copy.deepcopy(expert), steps.append)
    torch.manual_seed(1)
    runs["pretrained"].pretrain(copy.deepcopy(expert), lambda n: None)
    assert sum(steps) == 33 and "pretrain/teacher_bc_loss" in metrics
    # It learnt to clone the demos, is frozen from then on, and the rest of the run drew what it would without it:
    # the pretrained world model and actor are those of the run anchored to its pretrained actor (to float
    # rounding: other draws would differ from the first update on).
    assert (taught.teacher(images) - actions).pow(2).sum(-1).mean() < before
    assert not any(p.requires_grad for p in taught.teacher.parameters())
    # It is the `bc` method's policy for the run's seed, draw for draw (the BC baseline of the same seed).
    torch.manual_seed(base.seed)
    baseline = BC(replace(base, method="bc"), 2, torch.device("cpu"))
    baseline.pretrain(copy.deepcopy(expert), lambda n: None)
    for key, value in baseline.net.state_dict().items():
        assert torch.equal(value, taught.teacher.state_dict()[key]), key
    for name in ("world_model", "actor"):
        other = runs["pretrained"].modules()[name].state_dict()
        for key, value in taught.modules()[name].state_dict().items():
            torch.testing.assert_close(value, other[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")



def test_bc_members_train_an_ensemble_that_acts_with_its_mean_action_and_teaches_as_one(cmil_on_point):
    method, expert, _ = cmil_on_point
    cfg = replace(method.cfg, method="bc", **{"bc.steps": 30, "bc.members": 3})
    torch.manual_seed(0)
    bc = BC(cfg, 2, torch.device("cpu"))
    members = bc.net.members
    assert len(members) == 3 and isinstance(members[0], PixelPolicy)
    images, actions = (torch.as_tensor(x) for x in demo_pairs(expert))
    first = [p.detach().clone() for p in members[0].parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(first, members[1].parameters(), strict=True))  # their own initialisations
    errors = [(m(images) - actions).pow(2).sum(-1).mean() for m in members]
    metrics = bc.pretrain(copy.deepcopy(expert), lambda n: None)
    assert 0 < metrics["train/bc_loss"] < float(sum(errors)) / 3  # the members' mean loss
    after = [(m(images) - actions).pow(2).sum(-1).mean() for m in members]
    assert all(a < b for a, b in zip(after, errors, strict=True)), (after, errors)  # every member learnt to clone the demos
    # One policy: the mean of the members' actions.
    with torch.no_grad():
        torch.testing.assert_close(bc.net(images), torch.stack([m(images) for m in members]).mean(0))
    # One member is the plain network (its checkpoint keys, read by encoder_from and anchor_from, are unchanged).
    assert isinstance(BC(replace(cfg, **{"bc.members": 1}), 2, torch.device("cpu")).net, PixelPolicy)
    # CMIL's teacher is the same ensemble; the embedding distillation needs a single policy.
    taught = replace(method.cfg, **{"bc.members": 3, "agent.anchor_weight": 1.0, "agent.anchor_target": "bc"})
    assert isinstance(CMIL(taught, 2, torch.device("cpu")).teacher, PolicyEnsemble)
    with pytest.raises(ConfigError, match="bc.members"):
        CMIL(replace(taught, **{"agent.teacher_embed_weight": 1.0}), 2, torch.device("cpu"))
