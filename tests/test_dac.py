"""Pixel DAC: CLI dry run, the gradient penalty, absorbing-state transitions and targets, the reward sign."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cmil.config import Config, replace
from cmil.runs import Checkpointer, read_metrics, restore


def _dac():
    from cmil.methods import dac

    return dac


def test_dry_run_writes_a_complete_run_with_discriminator_diagnostics(tmp_path, capsys):
    from cmil.cli import main

    run = tmp_path / "dac"
    assert main(["train", "--method", "dac", "--task", "point", "--dry-run", "--run-dir", str(run)]) == 0
    assert "dac on point: success rate" in capsys.readouterr().out
    final = json.loads((run / "final.json").read_text())
    assert final["method"] == "dac" and 0.0 <= final["success_rate"] <= 1.0
    rows = read_metrics(run)
    evals = [r for r in rows if "eval/success_rate" in r]
    for key in ("disc/expert_acc", "disc/policy_acc", "disc/expert_prob", "disc/policy_prob"):
        assert any(key in r for r in evals), key
    for key in ("train/critic_loss", "train/actor_loss", "train/disc_loss", "train/grad_penalty"):
        assert any(key in r and np.isfinite(r[key]) for r in rows), key
    assert any(r.get("train/updates", 0) > 0 for r in rows)
    # The checkpoint restores every DAC module and optimiser into a fresh instance.
    from cmil.config_io import load_config

    method = _dac().DAC(load_config(run / "config.yaml"), 2, torch.device("cpu"))
    restore(Checkpointer.load(Checkpointer(run).latest()), method.modules(), method.optimizers())
    assert method.temperature().item() != pytest.approx(load_config(run / "config.yaml").dac.init_temperature)


def test_gradient_penalty_of_a_linear_discriminator_is_the_weight_norm_gap():
    gp_fn = _dac().gradient_penalty
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # ||grad|| = ||w|| = 5 everywhere

    def disc(x, a):
        return torch.cat([x, a], -1) @ w

    x_e, x_p = torch.randn(6, 1), torch.randn(6, 1)
    a_e, a_p = torch.randn(6, 1), torch.randn(6, 1)
    gp = gp_fn(disc, (x_e, a_e), (x_p, a_p))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)
    gp.backward()  # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    np.testing.assert_allclose(w.grad.numpy(), 2 * 4.0 * np.array([3.0, 4.0]) / 5.0, rtol=1e-5)


def test_gradient_penalty_uses_the_interpolated_point():
    gp_fn = _dac().gradient_penalty

    def disc(x, a):  # D = 0.5 ||[x, a]||^2 -> grad = [x, a] at the interpolated point
        return 0.5 * (x.pow(2).sum(-1) + a.pow(2).sum(-1))

    x_e, a_e = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0], [3.0]])
    x_p, a_p = torch.tensor([[0.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0], [0.0]])
    eps = torch.tensor([0.25, 0.5])
    # Sample 0: x_hat = (0.5, 0, 0) -> norm 0.5; sample 1: (0, 2, 1.5) -> norm 2.5.
    expected = ((0.5 - 1) ** 2 + (2.5 - 1) ** 2) / 2
    assert gp_fn(disc, (x_e, a_e), (x_p, a_p), eps=eps).item() == pytest.approx(expected)


def _episode(steps: int, terminal: bool, value: int, action_dim: int = 2):
    image = np.stack([np.full((64, 64, 3), value + t, np.uint8) for t in range(steps + 1)])
    action = np.concatenate([np.zeros((1, action_dim)), np.full((steps, action_dim), 0.5)]).astype(np.float32)
    action[1:, 0] = np.arange(steps) / 10  # identifies the step
    flags = np.zeros(steps + 1, bool)
    return {"image": image, "action": action, "is_first": np.r_[True, flags[1:]], "is_last": np.r_[flags[:-1], True],
            "is_terminal": np.r_[flags[:-1], terminal], "reward": np.zeros(steps + 1, np.float32),
            "success": flags.copy()}


def test_absorbing_transitions_of_terminated_and_timed_out_episodes():
    from cmil.data import replay

    terminated, timed_out = _episode(3, True, 10), _episode(3, False, 100)
    assert replay.episode_transition_count(terminated) == 4 and replay.episode_transition_count(timed_out) == 3
    batch = replay.sample_transitions([terminated, timed_out], 400, np.random.default_rng(0))
    kinds = set()
    for i in range(400):
        img, nxt, act = int(batch["image"][i, 0, 0, 0]), int(batch["next_image"][i, 0, 0, 0]), batch["action"][i]
        if batch["absorbing"][i]:  # the self-loop: zero image, zero action, absorbing next state
            assert batch["next_absorbing"][i] and img == 0 and nxt == 0 and not act.any()
            kinds.add("loop")
        elif batch["next_absorbing"][i]:  # the terminal step leads into the absorbing state
            assert img == 12 and nxt == 0 and act[0] == pytest.approx(0.2)
            kinds.add("into")
        else:  # ordinary (image[t], action[t+1], image[t+1]), incl. the timed-out episode's last step
            t = img - (10 if img < 100 else 100)
            assert nxt == img + 1 and act[0] == pytest.approx(t / 10) and act[1] == 0.5
            assert not (img < 100 and t == 2)
            kinds.add("last_timeout" if img == 102 else "step")
    assert kinds == {"loop", "into", "step", "last_timeout"}
    # Uniform over the 7 transitions.
    assert abs(batch["absorbing"].mean() - 1 / 7) < 0.06


def test_soft_target_bootstraps_absorbing_states_without_entropy():
    target = _dac().soft_target(reward=torch.tensor([1.0, 2.0]), next_q=torch.tensor([[3.0, 5.0], [4.0, 1.0]]),
                                next_logp=torch.tensor([0.5, 0.7]), temperature=torch.tensor(0.2), gamma=0.9,
                                next_absorbing=torch.tensor([False, True]))
    # Ordinary: 1 + 0.9 (min(3, 4) - 0.2 * 0.5); absorbing: 2 + 0.9 min(5, 1), no entropy, no done mask.
    np.testing.assert_allclose(target.numpy(), [1 + 0.9 * (3 - 0.1), 2 + 0.9 * 1.0], rtol=1e-6)


def test_updates_with_terminal_episodes_learn_an_expert_preferring_reward():
    dac = _dac()
    torch.manual_seed(0)
    # A weaker penalty and faster discriminator than the defaults: with penalty 10, the one-centred
    # penalty first scales up whatever direction D starts with, which takes more than 40 updates to undo.
    cfg = replace(Config(), seed=0, **{"dac.batch_size": 16, "dac.hidden": 32, "dac.cnn_depth": 4,
                                       "dac.feature_dim": 8, "dac.grad_penalty": 1.0, "dac.disc_lr": 1e-3})
    method = dac.DAC(cfg, 2, torch.device("cpu"))
    rng = np.random.default_rng(0)
    values = rng.integers(0, 200, 3)  # the same frames for expert and replay: only actions differ

    def episodes(sign: float, terminal: bool):
        eps = [_episode(6, terminal, int(v)) for v in values]
        for ep in eps:
            ep["action"][1:] = sign * 0.9  # expert pushes +0.9, the replay -0.9
        return SimpleNamespace(episodes=eps)

    expert, replay = episodes(1.0, True), episodes(-1.0, True)
    first = method.update(expert, replay)
    for _ in range(40):
        last = method.update(expert, replay)
    assert all(np.isfinite(v) for v in last.values())
    assert method.updates == 41 and last["train/disc_loss"] < first["train/disc_loss"]
    diag = method.diagnostics(expert, replay)
    assert diag["disc/expert_prob"] > diag["disc/policy_prob"]
    # The learnt reward prefers the expert's action on the same (non-absorbing) observation.
    image, absorbing = torch.as_tensor(expert.episodes[0]["image"][:1]), torch.zeros(1, dtype=torch.bool)
    with torch.no_grad():
        good = method.reward(method.disc_logit({"image": image, "absorbing": absorbing, "action": torch.full((1, 2), 0.9)}))
        bad = method.reward(method.disc_logit({"image": image, "absorbing": absorbing, "action": torch.full((1, 2), -0.9)}))
    assert good.item() > bad.item()
    # The optional BC term runs and is logged.
    bc_method = dac.DAC(replace(cfg, **{"dac.bc_weight": 1.0}), 2, torch.device("cpu"))
    assert np.isfinite(bc_method.update(expert, replay)["train/bc_loss"])
    # The policy acts in [-1, 1] for a raw uint8 frame.
    action = method.policy().act(expert.episodes[0]["image"][0], deterministic=True)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


def test_actor_critic_climbs_a_known_reward():
    """With D's reward swapped for r = a . w (gamma 0), the greedy action moves towards w."""
    dac = _dac()
    w = torch.tensor([1.0, -1.0])

    class KnownReward(dac.DAC):
        def reward(self, logit, batch=None):
            return batch["action"] @ w

    torch.manual_seed(0)
    cfg = replace(Config(), **{"dac.batch_size": 32, "dac.hidden": 32, "dac.cnn_depth": 4, "dac.feature_dim": 8,
                               "dac.gamma": 0.0})
    method = KnownReward(cfg, 2, torch.device("cpu"))
    rng = np.random.default_rng(0)
    eps = [_episode(10, False, int(v)) for v in rng.integers(0, 200, 3)]
    for ep in eps:
        ep["action"][1:] = rng.uniform(-1, 1, ep["action"][1:].shape)
    data = SimpleNamespace(episodes=eps)
    policy = method.policy()
    before = float(policy.act(eps[0]["image"][3], deterministic=True) @ w.numpy())
    for _ in range(120):
        metrics = method.update(data, data)
    after = float(policy.act(eps[0]["image"][3], deterministic=True) @ w.numpy())
    assert after > before + 0.8 and after > 1.4  # the maximum is 2, at a = (1, -1)
    # The critic regresses the reward itself: its mean matches the replay's mean reward (about 0).
    assert abs(metrics["train/q_mean"]) < 0.5
