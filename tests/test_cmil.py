"""CMIL's update pieces: the reward of eq. 10, no penalty on real data, targets, the BC term."""

import copy
import math

import numpy as np
import pytest
import torch

from cmil.config import replace
from cmil.methods.cmil import CMIL


def _fixed_discriminator(method, prob: float):
    logit = torch.logit(torch.tensor(prob))
    method.imitation.disc.forward = lambda feat, action, noise=False: logit.expand(feat.shape[:-1])


@pytest.mark.parametrize("prob", [0.1, 0.5, 0.9])
def test_reward_formula_on_known_discriminator_values(cmil_on_point, prob):
    method, _, _ = cmil_on_point
    _fixed_discriminator(method, prob)
    feat, action = torch.zeros(3, method.wm.feat_dim), torch.zeros(3, 2)
    dis = torch.tensor([0.0, 0.1, 0.2])
    alpha = method.cfg.agent.alpha
    expected = torch.log(torch.tensor(prob)) - torch.log(torch.tensor(1 - prob)) - alpha * dis
    torch.testing.assert_close(method.imitation.reward(feat, action, dis), expected)
    # The authors' code's variant: D itself instead of the log-ratio.
    method.cfg = replace(method.cfg, **{"agent.reward": "prob"})
    torch.testing.assert_close(method.imitation.reward(feat, action, dis), prob - alpha * dis)


def test_no_disagreement_penalty_on_real_data(cmil_on_point):
    method, expert, replay = cmil_on_point
    _fixed_discriminator(method, 0.7)
    feat, action = torch.zeros(4, method.wm.feat_dim), torch.zeros(4, 2)
    torch.testing.assert_close(method.imitation.reward(feat, action, None), torch.logit(torch.tensor(0.7)).expand(4))
    # The real-data critic loss (eq. 14) is the same whatever alpha is: its reward has no penalty.
    B, L, H, F = 2, 5, 3, method.wm.feat_dim
    torch.manual_seed(1)
    real_feat, act_taken = torch.randn(B, L, F), torch.rand(B, L - 1, 2) * 2 - 1
    is_first = torch.zeros(B, L, dtype=torch.bool)
    imag_feat, imag_act = torch.randn(H + 1, B * L, F), torch.rand(H + 1, B * L, 2) * 2 - 1
    reward = torch.randn(H, B * L)
    losses = []
    for alpha in (0.0, 1000.0):
        method.cfg = replace(method.cfg, **{"agent.alpha": alpha})
        _, metrics = method.critic_loss(real_feat, act_taken, is_first, imag_feat, imag_act, reward)
        losses.append(float(metrics["train/critic_data_loss"]))
    assert losses[0] == pytest.approx(losses[1])


def test_target_critics_copied_every_n_updates(cmil_on_point):
    method, expert, replay = cmil_on_point
    feat, act = torch.randn(5, method.wm.feat_dim), torch.rand(5, 2)
    method.update(expert, replay)  # update 1: critics trained, targets not yet copied
    assert not torch.allclose(method.critic(feat, act), method.critic.target_values(feat, act))
    method.update(expert, replay)  # update 2 = target_update_every: hard copy
    torch.testing.assert_close(method.critic(feat, act), method.critic.target_values(feat, act))


def test_bc_term_gradient_reaches_the_actor(cmil_on_point):
    method, expert, replay = cmil_on_point
    before = copy.deepcopy(method.actor.state_dict())
    metrics = method.update(expert, expert, agent=False)  # world model + BC only
    assert "train/bc_loss" in metrics
    changed = [not torch.equal(before[k], v) for k, v in method.actor.state_dict().items()]
    assert all(changed)
    # In the full update, beta scales the BC gradient: beta = 0 and beta = 10 move the actor differently.
    results = []
    for beta in (0.0, 10.0):
        m = copy.deepcopy(method)
        m.cfg = replace(m.cfg, **{"agent.beta": beta})
        torch.manual_seed(3)
        e, r = copy.deepcopy(expert), copy.deepcopy(replay)
        m.update(e, r)
        results.append(torch.cat([p.flatten() for p in m.actor.parameters()]))
    assert not torch.allclose(results[0], results[1])


def test_update_reports_the_papers_diagnostics(cmil_on_point):
    method, expert, replay = cmil_on_point
    metrics = method.update(expert, replay)
    for key in ("disc/expert_acc", "disc/policy_acc", "disc/expert_prob", "disc/policy_prob",
                "model/imag_disagreement", "train/actor_loss", "train/critic_loss", "train/bc_loss",
                "train/critic_data_loss", "train/critic_model_loss"):
        assert key in metrics
    diag = method.diagnostics(expert, replay)
    assert diag["bound/distribution_match"] == pytest.approx(diag["disc/expert_prob"] - diag["disc/policy_prob"])


def test_actor_gradient_split_into_rl_and_bc_parts(cmil_on_point):
    method, expert, replay = cmil_on_point
    m = method.update(expert, replay)
    for key in ("train/actor_grad_rl", "train/actor_grad_bc", "train/actor_grad_cos"):
        assert key in m
    # The parts add up to the total gradient, so with beta = 0 the BC part is zero and the RL part is all of it.
    method.cfg = replace(method.cfg, **{"agent.beta": 0.0, "agent.grad_clip": 1e9})
    m = method.update(expert, replay)
    assert m["train/actor_grad_bc"] == 0.0
    assert m["train/actor_grad_rl"] == pytest.approx(m["train/actor_grad_norm"], rel=1e-4)


def test_rl_weight_zero_leaves_the_actor_to_its_regularisers(cmil_on_point):
    # agent.rl_weight 0 (the no-RL ablation): the actor's step is the BC term's alone, yet D and the critics train.
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.rl_weight": 0.0, "agent.grad_clip": 1e9})
    disc, critic = copy.deepcopy(method.imitation.disc.state_dict()), copy.deepcopy(method.critic.q.state_dict())
    m = method.update(expert, replay)
    assert m["train/actor_grad_rl"] == pytest.approx(0.0, abs=1e-5 * m["train/actor_grad_bc"])
    assert m["train/actor_grad_bc"] == pytest.approx(m["train/actor_grad_norm"], rel=1e-4)
    assert any(not torch.equal(v, method.imitation.disc.state_dict()[k]) for k, v in disc.items())
    assert any(not torch.equal(v, method.critic.q.state_dict()[k]) for k, v in critic.items())


@pytest.mark.parametrize("stop_grad", [True, False])
def test_stop_gradient_on_the_actors_imagined_input(cmil_on_point, stop_grad):
    method, _, _ = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.stop_grad_actor_input": stop_grad})
    start = {k: v.requires_grad_(True) for k, v in method.wm.initial(3).items()}
    start = {k: torch.randn_like(v).requires_grad_(True) for k, v in start.items()}
    start["std"] = start["std"].detach().abs() + 0.1
    _, actions, _, _ = method.imagine(start, 2)
    grad = torch.autograd.grad(actions[0].sum(), start["deter"], allow_unused=True)[0]
    assert (grad is None or torch.all(grad == 0)) == stop_grad


def _bc_phase_step(cmil_on_point, field: str, values: tuple, parts) -> list[tuple[torch.Tensor, ...]]:
    """One BC-phase update from the same state and seed per value of `field`: the flat parameters of each of
    `parts(method)` afterwards, and the update's metrics."""
    method, expert, replay = cmil_on_point
    out = []
    for value in values:
        m = copy.deepcopy(method)
        m.cfg = replace(m.cfg, **{field: value})
        torch.manual_seed(5)
        metrics = m.update(copy.deepcopy(expert), copy.deepcopy(replay), agent=False)
        out.append((*(torch.cat([p.flatten() for p in mod.parameters()]) for mod in parts(m)), metrics))
    return out


def test_bc_loss_can_shape_the_world_model(cmil_on_point):
    (enc0, actor0, m0), (enc1, actor1, m1) = _bc_phase_step(cmil_on_point, "agent.bc_model_weight", (0.0, 1.0),
                                                            lambda m: (m.wm.encoder, m.actor))
    assert "model/bc_loss" not in m0 and "model/bc_loss" in m1
    assert not torch.allclose(enc0, enc1)  # the encoder got the BC gradient
    torch.testing.assert_close(actor0, actor1)  # the actor's own BC step is unchanged


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_representation_trains_only_in_pretraining(cmil_on_point, freeze):
    # wm.freeze_representation: the encoder and the posterior layers learn in pretraining and stay as they are
    # online, while the rest of the world model (here the decoder) keeps learning.
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"wm.freeze_representation": freeze})
    flat = lambda params: torch.cat([p.detach().flatten() for p in params])  # noqa: E731
    before = flat(method.wm.representation_parameters())
    method.pretrain(expert, lambda n: None)
    pretrained, decoder = flat(method.wm.representation_parameters()), flat(method.wm.decoder.parameters())
    assert not torch.equal(before, pretrained)
    method.update(expert, replay)
    assert torch.equal(pretrained, flat(method.wm.representation_parameters())) == freeze
    assert not torch.equal(decoder, flat(method.wm.decoder.parameters()))


def test_frozen_encoder_never_trains_and_the_rest_of_the_model_does(cmil_on_point):
    # wm.freeze_encoder: the (BC-given) encoder keeps its weights through pretraining and online updates; the
    # posterior layers above it still learn (they turn its embedding into the latent the actor reads).
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"wm.freeze_encoder": True})
    flat = lambda params: torch.cat([p.detach().flatten() for p in params])  # noqa: E731
    encoder, posterior = flat(method.wm.encoder.parameters()), flat(method.wm.post_out.parameters())
    method.pretrain(expert, lambda n: None)
    method.update(expert, replay)
    assert torch.equal(encoder, flat(method.wm.encoder.parameters()))
    assert all(p.grad is None for p in method.wm.encoder.parameters())  # the backward skipped it
    assert not torch.equal(posterior, flat(method.wm.post_out.parameters()))


@pytest.mark.parametrize("carry", [True, False])
def test_recurrent_state_carried_between_batches(cmil_on_point, carry, monkeypatch):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"wm.carry_state": carry})
    seen = []
    loss = method.wm.loss
    copy = lambda state: None if state is None else {k: v.clone() for k, v in state.items()}  # noqa: E731
    monkeypatch.setattr(method.wm, "loss", lambda batch, state=None: (seen.append(copy(state)), loss(batch, state))[1])
    method.update(expert, replay, agent=False)
    method.update(expert, replay, agent=False)
    if carry:  # the first batch starts from zeros (the initial state), the next from the first's last state
        assert all(not v.any() for v in seen[0].values())
        assert seen[1]["deter"].shape == (2 * method.cfg.batch_size, method.cfg.wm.deter)
        assert seen[1]["deter"].any() and not seen[1]["deter"].requires_grad
    else:
        assert seen[0] is None and seen[1] is None


def test_normalised_penalty_and_discriminator_input(cmil_on_point):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.penalty_norm": True, "agent.disc_input_norm": True,
                                        "agent.return_norm": True})
    m = method.update(expert, replay)
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
    stats = method.stats
    assert int(stats["disagreement"].count) == 1 and int(stats["disc_input"].count) == 1
    assert int(stats["returns"].count) == 1
    # A constant disagreement is removed entirely by the centring: the penalty only ranks steps.
    _fixed_discriminator(method, 0.5)
    dis = torch.full((4,), 0.03)
    stats["disagreement"].mean.fill_(0.03)
    r = method.imitation.reward(torch.zeros(4, method.wm.feat_dim), torch.zeros(4, 2), dis)
    assert torch.allclose(r, torch.zeros(4), atol=1e-2)
    assert "stats" in method.modules()  # the running statistics are checkpointed
    # A probe reads the statistics without adding its batch; the training reward adds it.
    count = int(stats["disagreement"].count)
    method.imitation.reward(torch.zeros(4, method.wm.feat_dim), torch.zeros(4, 2), dis, update_stats=False)
    assert int(stats["disagreement"].count) == count
    method.imitation.reward(torch.zeros(4, method.wm.feat_dim), torch.zeros(4, 2), dis)
    assert int(stats["disagreement"].count) == count + 1


def test_penalty_norm_freeze_fixes_the_penalty_statistics_after_that_many_updates(cmil_on_point):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.penalty_norm": True, "agent.penalty_norm_freeze": 2})
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device("cpu"))
    stats = method.stats["disagreement"]
    seen = []
    for _ in range(4):
        method.update(expert, replay)
        seen.append((float(stats.mean), float(stats.var)))
    assert seen[1] != seen[0]                   # the second update still moves them
    assert seen[3] == seen[2] == seen[1]        # after two they stay, though the imagined disagreement changes
    assert int(stats.count) == 4


def test_lambda_objective_is_eq12(cmil_on_point):
    method, _, _ = cmil_on_point
    a = method.cfg.agent
    reward, q_min = torch.randn(3, 5), torch.randn(4, 5)
    returns, obj = method.lambda_objective(reward, q_min)
    # V^lambda by hand, backwards from the last critic value (eq. 11).
    expected, nxt = torch.empty(3, 5), q_min[-1]
    for t in reversed(range(3)):
        nxt = reward[t] + a.gamma * ((1 - a.lam) * q_min[t + 1] + a.lam * nxt)
        expected[t] = nxt
    torch.testing.assert_close(returns, expected)
    torch.testing.assert_close(obj, a.lam * expected + (1 - a.lam) * q_min[:-1])


def test_bc_action_noise_reaches_only_the_filter_of_expert_sequences(cmil_on_point, monkeypatch):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.bc_action_noise": 0.5})
    seen = {}
    loss = method.wm.loss
    monkeypatch.setattr(method.wm, "loss", lambda batch, state=None: (seen.update(batch), loss(batch, state))[1])
    bc_targets = []
    bc = method.bc_loss
    monkeypatch.setattr(method, "bc_loss", lambda feat, act, **kw: (bc_targets.append(act), bc(feat, act, **kw))[1])
    torch.manual_seed(0)
    np_state = (copy.deepcopy(expert.rng), copy.deepcopy(replay.rng))
    method.update(expert, replay, agent=False)
    expert.rng, replay.rng = np_state
    B = method.cfg.batch_size
    clean_exp = torch.as_tensor(expert.sample(B)["action"])
    clean_rep = torch.as_tensor(replay.sample(B)["action"])
    assert not torch.allclose(seen["action"][:B], clean_exp)          # the expert half is perturbed
    assert seen["action"][:B].abs().max() <= 1.0
    torch.testing.assert_close(seen["action"][B:], clean_rep)          # the replay half is not
    torch.testing.assert_close(bc_targets[-1], clean_exp[:, 1:])       # BC regresses the clean actions


def test_mse_bc_fits_the_std_only_with_bc_fit_std(cmil_on_point):
    method, expert, _ = cmil_on_point
    feat = torch.randn(6, method.wm.agent_feat_dim)
    action = torch.rand(6, 2) * 2 - 1
    for fit_std in (False, True):
        method.cfg = replace(method.cfg, **{"agent.bc_loss": "mse", "agent.bc_fit_std": fit_std})
        method.actor.zero_grad()
        method.bc_loss(feat, action).backward()
        # The std is the second half of the actor's last layer; only the NLL term reaches it.
        std_grad = method.actor.net[-1].weight.grad[2:]
        assert bool(std_grad.abs().sum() > 0) == fit_std
        # Shaping the world model never uses the std term.
        method.actor.zero_grad()
        method.bc_loss(feat, action, shaping=True).backward()
        assert method.actor.net[-1].weight.grad[2:].abs().sum() == 0


def test_mse_bc_fits_every_actor_head_on_its_own(cmil_on_point):
    """agent.actor_heads: the MSE term is the mean of each head's squared error (not the error of their
    average), so that every head is a BC policy; the policy is their average and a full update runs."""
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.bc_loss": "mse", "agent.bc_fit_std": False, "agent.actor_heads": 3})
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device("cpu"))
    assert len(method.actor.net) == 3
    feat, action = torch.randn(6, method.wm.agent_feat_dim), torch.rand(6, 2) * 2 - 1
    dist, means = method.actor.with_head_means(feat)
    expected = torch.stack([(m - action).pow(2).sum(-1).mean() for m in means]).mean()
    torch.testing.assert_close(method.bc_loss(feat, action), expected)
    assert not torch.allclose(expected, (dist.mean - action).pow(2).sum(-1).mean())
    method.bc_loss(feat, action).backward()
    assert all(net[-1].weight.grad.abs().sum() > 0 for net in method.actor.net)
    metrics = method.update(expert, replay)
    assert all(math.isfinite(v) for v in metrics.values())


def test_policy_filtered_bc_and_the_embedding_head_train_the_world_model(cmil_on_point):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.bc_filter": "policy", "agent.bc_model_weight": 1.0, "agent.bc_embed_weight": 1.0,
                                 "wm.posterior": "image", "wm.agent_feat": "stoch"})
    torch.manual_seed(0)
    m = CMIL(cfg, 2, torch.device("cpu"))
    assert "embed_bc" in m.modules()
    before = {k: v.clone() for k, v in m.embed_bc.state_dict().items()}
    metrics = m.update(expert, replay)
    assert "model/embed_bc_loss" in metrics and "model/bc_loss" in metrics
    assert all(not torch.equal(before[k], v) for k, v in m.embed_bc.state_dict().items())
    # The actor reads the stochastic state's mean only.
    assert m.actor.net[0].in_features == cfg.wm.stoch


def test_prior_disc_states_feed_the_discriminator_one_step_predictions(cmil_on_point, monkeypatch):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.disc_states": "prior", "wm.posterior": "image", "wm.agent_feat": "stoch"})
    torch.manual_seed(0)
    m = CMIL(cfg, 2, torch.device("cpu"))
    seen = []
    original = m.imitation.logit
    monkeypatch.setattr(m.imitation, "logit", lambda f, a, noise=False: seen.append((f.clone(), noise)) or original(f, a, noise))
    captured = {}
    loss = m.wm.loss

    def keep_loss(batch, state=None):
        out = loss(batch, state)
        captured["post"] = dict(out[1])  # update() pops keys from its own copy
        return out
    monkeypatch.setattr(m.wm, "loss", keep_loss)
    m.update(expert, replay)
    post = captured["post"]
    B, L = cfg.batch_size, cfg.seq_len
    expert_in = [f for f, noise in seen if noise][0]           # D's training input on the expert side
    # Expert frames 1..L-2 as the prior predicted them, not as the posterior saw them.
    torch.testing.assert_close(expert_in, post["prior_feat"][:B, 1:-1].reshape(-1, expert_in.shape[-1]))
    assert not torch.allclose(expert_in, m.wm.agent_feat(post)[:B, 1:-1].reshape(-1, expert_in.shape[-1]))
    # The policy side skips imagination step 0 (a real posterior state): H - 1 steps from all 2B x L starts.
    policy_in = [f for f, noise in seen if noise][1]
    assert policy_in.shape[0] == (cfg.agent.horizon - 1) * 2 * B * L


def test_shared_critic_forward_gives_the_updates_of_separate_forwards(cmil_on_point, monkeypatch):
    # The twin critics run once on the imagined steps, for the actor's objective and for the critic loss;
    # the old code ran them again on detached inputs. Both must give the same parameters after updates.
    method, expert, replay = cmil_on_point
    shared, separate = copy.deepcopy(method), copy.deepcopy(method)
    critic_loss = separate.critic_loss
    monkeypatch.setattr(separate, "critic_loss", lambda *args, q_imag=None, **kw: critic_loss(*args, **kw))
    results = []
    for agent in (shared, separate):
        torch.manual_seed(3)
        e, r = copy.deepcopy(expert), copy.deepcopy(replay)
        for _ in range(3):
            agent.update(e, r)
        results.append({f"{name}.{k}": v for name, mod in agent.modules().items() for k, v in mod.state_dict().items()})
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)


def _actors_after_sloped_update(method, expert, replay, add_slope) -> list[torch.Tensor]:
    """The actor's parameters after one update of a copy of `method` patched by `add_slope(agent, slope)`, for a
    slope of 0 and of 5 (same seed): equal when the patched slope cannot reach the actor."""
    actors = []
    for slope in (0.0, 5.0):
        agent = copy.deepcopy(method)
        add_slope(agent, slope)
        torch.manual_seed(0)
        agent.update(copy.deepcopy(expert), copy.deepcopy(replay))
        actors.append(torch.cat([p.flatten() for p in agent.actor.parameters()]))
    return actors


@pytest.mark.parametrize("objective", ["lambda", "q", "q_real"])
def test_q_actor_objective_takes_no_gradient_through_the_reward(cmil_on_point, objective):
    # 'q': the actor follows the critics' action slope alone; the reward (through the dynamics) moves it only
    # under eq. 12's lambda-return objective.
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.actor_objective": objective})

    def reward_slope(agent, slope):  # D kept in the graph (x 0) so that it still has a loss to step
        forward = agent.imitation.disc.forward
        agent.imitation.disc.forward = lambda feat, action, noise=False: 0 * forward(feat, action) + slope * feat.sum(-1)

    actors = _actors_after_sloped_update(method, expert, replay, reward_slope)
    assert torch.equal(actors[0], actors[1]) == (objective != "lambda")


@pytest.mark.parametrize("objective", ["q", "q_real"])
def test_q_real_reads_the_critics_at_the_real_states_only(cmil_on_point, objective):
    # 'q_real': the critics' action slope at imagination step 0 (the batch's posterior states) moves the actor; a slope
    # at the imagined steps 1..H does not (under 'q' both do).
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.actor_objective": objective})

    def slope_at(steps):
        def add(agent, slope):
            forward = agent.critic.forward

            def sloped(feat, action):  # on (H+1, N, ...) imagined steps (later calls come after the actor's step)
                mask = torch.zeros(feat.shape[0], 1, device=feat.device)
                mask[steps] = 1.0
                return forward(feat, action) + slope * mask * action.sum(-1)
            agent.critic.forward = sloped
        return add

    at_real = _actors_after_sloped_update(method, expert, replay, slope_at(slice(0, 1)))
    at_imagined = _actors_after_sloped_update(method, expert, replay, slope_at(slice(1, None)))
    assert not torch.equal(at_real[0], at_real[1])
    assert torch.equal(at_imagined[0], at_imagined[1]) == (objective == "q_real")


@pytest.mark.parametrize("through_action", [True, False])
def test_critic_action_grad_false_hides_the_critics_action_slope_from_the_actor(cmil_on_point, through_action):
    # With agent.critic_action_grad False the critics are read as state values on the imagined steps: a slope
    # of Q in the action alone must leave the actor's update as it is (and change it when True).
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.critic_action_grad": through_action})

    def critic_action_slope(agent, slope):
        forward = agent.critic.forward
        agent.critic.forward = lambda feat, action: forward(feat, action) + slope * action.sum(-1)

    actors = _actors_after_sloped_update(method, expert, replay, critic_action_slope)
    assert torch.equal(actors[0], actors[1]) != through_action


def test_imagination_from_the_replay_batch_only(cmil_on_point, monkeypatch):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.imag_from": "replay"})
    starts, real = [], []
    imagine, critic_loss = method.imagine, method.critic_loss
    monkeypatch.setattr(method, "imagine", lambda start, h: starts.append(start["deter"].shape[0]) or imagine(start, h))
    monkeypatch.setattr(method, "critic_loss", lambda feat, *args, **kw: real.append(feat.shape[0]) or critic_loss(feat, *args, **kw))
    metrics = method.update(expert, replay)
    B, L = method.cfg.batch_size, method.cfg.seq_len
    assert starts == [B * L] and real == [B]   # the replay half: imagination starts and eq. 14's sequences
    assert "train/critic_data_loss" in metrics


def test_policy_ema_acts_with_averaged_weights_and_is_checkpointed(cmil_on_point):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.policy_ema": 0.5})
    torch.manual_seed(0)
    ema = CMIL(method.cfg, 2, torch.device("cpu"))
    assert "policy_ema" in ema.modules()
    ema.update(expert, replay)
    first = copy.deepcopy(ema.actor.state_dict())
    # After one update the average is the live weights; after two it is halfway between the two snapshots.
    for key, value in ema.policy(live=False).actor.state_dict().items():
        torch.testing.assert_close(value, first[key])
    ema.update(expert, replay, agent=False)
    live = ema.policy(live=True)
    acting = ema.policy()
    assert live.actor is ema.actor and acting.actor is not ema.actor
    for key, value in acting.actor.state_dict().items():
        torch.testing.assert_close(value, 0.5 * first[key] + 0.5 * ema.actor.state_dict()[key])
    assert not torch.equal(next(acting.wm.encoder.parameters()), next(ema.wm.encoder.parameters()))
    # Without the option the acting policy is the live one.
    assert method.policy().actor is method.actor and "policy_ema" not in method.modules()


def test_frame_shifted_bc_reads_each_expert_frame_alone(cmil_on_point, monkeypatch):
    # bc_frame_shift: both BC terms act on frame_feat of the expert frames (each shifted on its own).
    _, expert, replay = cmil_on_point
    cfg = replace(cmil_on_point[0].cfg, **{"wm.posterior": "image", "wm.agent_feat": "stoch", "agent.bc_frame_shift": True,
                                   "agent.bc_model_weight": 1.0})
    torch.manual_seed(0)
    method = CMIL(cfg, 2, torch.device("cpu"))
    calls = []
    original = method.wm.frame_feat

    def spy(image, shift=False):
        calls.append((tuple(image.shape), shift))
        return original(image, shift)

    monkeypatch.setattr(method.wm, "frame_feat", spy)
    metrics = method.update(expert, replay)
    assert calls == [((cfg.batch_size, cfg.seq_len - 1, 64, 64, 3), True)]
    assert "model/bc_loss" in metrics and "train/bc_loss" in metrics


def test_feature_noise_reaches_only_the_actors_bc_step(cmil_on_point):
    (wm0, actor0, _), (wm1, actor1, _) = _bc_phase_step(cmil_on_point, "agent.bc_feat_noise", (0.0, 1.0),
                                                        lambda m: (m.wm, m.actor))
    torch.testing.assert_close(wm0, wm1)  # the world model's step is untouched
    assert not torch.allclose(actor0, actor1)  # the actor learnt from perturbed states


@pytest.mark.parametrize("norm", [False, True])
def test_state_only_discriminator_ignores_the_action(cmil_on_point, norm):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.disc_action": False, "agent.disc_input_norm": norm})
    torch.manual_seed(0)
    state_only = CMIL(cfg, 2, torch.device("cpu"))
    assert state_only.imitation.disc.net[0].in_features == state_only.wm.agent_feat_dim
    metrics = state_only.update(expert, replay)
    assert 0.0 <= metrics["disc/expert_prob"] <= 1.0 and metrics["train/disc_loss"] > 0
    feat = torch.randn(5, state_only.wm.agent_feat_dim)
    a1, a2 = torch.rand(5, 2) * 2 - 1, torch.rand(5, 2) * 2 - 1
    torch.testing.assert_close(state_only.imitation.logit(feat, a1), state_only.imitation.logit(feat, a2))
    # The paper's D(s, a) does read it.
    assert not torch.allclose(method.imitation.logit(feat, a1), method.imitation.logit(feat, a2))


@pytest.mark.parametrize("norm", [False, True])
def test_disc_gradient_penalty_changes_only_the_discriminators_step(cmil_on_point, norm):
    method, expert, replay = cmil_on_point
    after = {}
    for weight in (0.0, 10.0):
        cfg = replace(method.cfg, **{"agent.disc_grad_penalty": weight, "agent.disc_input_norm": norm})
        torch.manual_seed(0)
        agent = CMIL(cfg, 2, torch.device("cpu"))
        torch.manual_seed(1)
        m = agent.update(copy.deepcopy(expert), copy.deepcopy(replay))   # the same batches for both
        assert ("train/disc_grad_penalty" in m) == bool(weight)
        after[weight] = {name: [p.detach().clone() for p in mod.parameters()]
                         for name, mod in (("wm", agent.wm), ("actor", agent.actor), ("disc", agent.imitation.disc))}
    assert m["train/disc_grad_penalty"] > 0
    for name in ("wm", "actor"):   # both step before D, and the penalty draws its random numbers after them
        assert all(torch.equal(a, b) for a, b in zip(after[0.0][name], after[10.0][name], strict=True)), name
    assert not all(torch.equal(a, b) for a, b in zip(after[0.0]["disc"], after[10.0]["disc"], strict=True))


@pytest.mark.parametrize("pairs", ["imagined", "replay"])
def test_discriminator_policy_side_is_imagined_or_the_replays_real_pairs(cmil_on_point, pairs):
    method, expert, _ = cmil_on_point
    # Features of the frame alone (the `default` preset's forms): no sampled recurrent state tells equal rows apart.
    cfg = replace(method.cfg, **{"agent.disc_policy_pairs": pairs, "wm.posterior": "image", "wm.agent_feat": "stoch"})
    torch.manual_seed(0)
    agent = CMIL(cfg, 2, torch.device("cpu"))
    # Replay batches identical to the expert ones: real policy pairs are then exactly the expert pairs.
    m = agent.update(copy.deepcopy(expert), copy.deepcopy(expert))
    same = m["disc/expert_prob"] == m["disc/policy_prob"]
    assert same == (pairs == "replay")


def test_env_reward_measurement_learns_the_tasks_reward_and_replaces_ds(cmil_on_point, point_episodes):
    method, expert, replay = cmil_on_point
    cfg = replace(method.cfg, **{"agent.reward": "env"})
    torch.manual_seed(0)
    measured = CMIL(cfg, 2, torch.device("cpu"))
    assert "reward_head" in measured.modules() and "reward_head" in measured.optimizers()
    losses = [measured.update(expert, replay)["train/reward_head_loss"] for _ in range(100)]
    rewards = np.concatenate([ep["reward"][1:] for ep in point_episodes])
    assert np.mean(losses[-20:]) < 0.5 * rewards.var()   # it fits the stored rewards better than their mean does
    # D no longer enters the reward: eq. 10's log-ratio is replaced by the head, the penalty stays.
    _fixed_discriminator(measured, 0.9)
    feat, action = torch.randn(3, measured.wm.agent_feat_dim), torch.zeros(3, 2)
    dis = torch.tensor([0.0, 0.1, 0.2])
    head = measured.imitation.head(torch.cat([feat, action], -1)).squeeze(-1)
    torch.testing.assert_close(measured.imitation.reward(feat, action, dis), head - cfg.agent.alpha * dis)
    # Off (the paper's form): no head, and an update reads no reward.
    assert method.imitation.head is None and "reward" not in method.batch_keys
    assert "train/reward_head_loss" not in method.update(expert, replay)


@pytest.mark.parametrize("score", ["q", "disc"])
def test_weighted_objective_moves_towards_the_candidates_its_score_rates_higher(cmil_on_point, score):
    # 'weighted': a score that rises with the first action dimension must shift the regression target up in that
    # dimension and leave the other about where the actor's mean is.
    method, _, _ = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.actor_objective": "weighted", "agent.weighted_score": score,
                                        "agent.weighted_candidates": 64})
    net = method.critic if score == "q" else method.imitation.disc
    forward = net.forward
    net.forward = lambda feat, action, **kw: 0 * forward(feat, action, **kw) + 3.0 * action[..., 0]
    torch.manual_seed(0)
    feat = torch.randn(200, method.wm.agent_feat_dim)
    mean = torch.zeros(200, 2)
    step = method.weighted_target(feat, mean) - mean
    assert step[:, 0].mean() > 0.1 and step[:, 1].abs().mean() < step[:, 0].mean() / 2


@pytest.mark.parametrize("score", ["q", "disc"])
def test_weighted_objective_reads_the_critics_only_with_the_q_score(cmil_on_point, score):
    method, expert, replay = cmil_on_point
    method.cfg = replace(method.cfg, **{"agent.actor_objective": "weighted", "agent.weighted_score": score})

    def critic_action_slope(agent, slope):
        forward = agent.critic.forward
        agent.critic.forward = lambda feat, action: forward(feat, action) + slope * action[..., 0]

    actors = _actors_after_sloped_update(method, expert, replay, critic_action_slope)
    assert torch.equal(actors[0], actors[1]) == (score == "disc")
    assert "train/weighted_step" in copy.deepcopy(method).update(copy.deepcopy(expert), copy.deepcopy(replay))


def test_explore_noise_widens_sampled_actions_only(cmil_on_point):
    method, _, _ = cmil_on_point
    obs = np.zeros((method.cfg.image_size, method.cfg.image_size, 3), np.uint8)

    def actions(noise: float, deterministic: bool) -> np.ndarray:
        method.cfg = replace(method.cfg, **{"agent.explore_noise": noise})
        policy, out = method.policy(), []
        for i in range(200):  # one action per seed: the same draw of the actor's own sample with and without noise
            torch.manual_seed(i)
            policy.reset()
            out.append(policy.act(obs, deterministic))
        return np.stack(out)

    np.testing.assert_array_equal(actions(0.0, True), actions(0.5, True))      # evaluation acts with the mean
    plain, noisy = actions(0.0, False), actions(0.5, False)
    added = noisy - plain    # the noise, where the box's clip left it
    assert 0.3 < added.std() < 0.6 and np.abs(noisy).max() <= 1.0
