"""Actor distribution, TD(lambda), critics' targets and the freezing helper."""

import math

import pytest
import torch

from cmil.models.actor_critic import Actor, Discriminator, TruncNormal, TwinQ, frozen, lambda_returns


def test_lambda_returns_hand_computed():
    # H = 2, gamma 0.9, lambda 0.5; eq. 11 written out:
    # V_1(s0) = r0 + g v1 = 1.9; V_2(s0) = r0 + g r1 + g^2 v2 = 5.23; V^lam = 0.5 * 1.9 + 0.5 * 5.23.
    reward = torch.tensor([[1.0], [2.0]])
    value = torch.tensor([[0.5], [1.0], [3.0]])
    out = lambda_returns(reward, value, gamma=0.9, lam=0.5)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.5 * 1.9 + 0.5 * 5.23, 2 + 0.9 * 3.0]))


def test_lambda_returns_limits():
    reward = torch.rand(5, 3)
    value = torch.rand(6, 3)
    # lambda = 0: one-step targets; lambda = 1: Monte Carlo with a bootstrap at the horizon.
    torch.testing.assert_close(lambda_returns(reward, value, 0.9, 0.0), reward + 0.9 * value[1:])
    mc = sum(0.9**k * reward[k] for k in range(5)) + 0.9**5 * value[5]
    torch.testing.assert_close(lambda_returns(reward, value, 0.9, 1.0)[0], mc)


def test_trunc_normal_density_and_entropy():
    torch.manual_seed(0)
    dist = TruncNormal(torch.tensor([[0.7]]), torch.tensor([[0.6]]))
    grid = torch.linspace(-1, 1, 20001)[:, None]
    density = dist.log_prob(grid).exp()
    assert abs(torch.trapezoid(density, grid[:, 0]).item() - 1.0) < 1e-3
    samples = torch.stack([dist.rsample() for _ in range(20000)])
    assert samples.min() > -1 and samples.max() < 1
    mc_entropy = -dist.log_prob(samples).mean()
    assert abs(mc_entropy.item() - dist.entropy().item()) < 0.02


def test_actor_rsample_is_differentiable():
    actor = Actor(8, 3, layers=2, units=16)
    feat = torch.randn(5, 8)
    actor(feat).rsample().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


def test_target_copy_only_on_update():
    q = TwinQ(4, 2, 1, 8)
    feat, act = torch.randn(3, 4), torch.randn(3, 2)
    torch.testing.assert_close(q(feat, act), q.target_values(feat, act))
    with torch.no_grad():
        for p in q.q.parameters():
            p.add_(1.0)
    assert not torch.allclose(q(feat, act), q.target_values(feat, act))
    q.update_target()
    torch.testing.assert_close(q(feat, act), q.target_values(feat, act))
    assert not any(p.requires_grad for p in q.target.parameters())


def test_discriminator_noise_only_when_asked():
    torch.manual_seed(0)
    d = Discriminator(4, 2, 2, 16, noise_std=2.5)
    feat, act = torch.randn(64, 4), torch.randn(64, 2)
    torch.testing.assert_close(d(feat, act), d(feat, act))
    assert not torch.allclose(d(feat, act, noise=True), d(feat, act))


def test_frozen_passes_input_gradients_but_not_parameter_gradients():
    net = torch.nn.Linear(3, 1)
    x = torch.randn(2, 3, requires_grad=True)
    with frozen(net):
        net(x).sum().backward()
    assert net.weight.grad is None and x.grad is not None
    assert net.weight.requires_grad
    assert math.isfinite(x.grad.sum().item())


def test_actor_heads_average_independent_mlps_and_one_head_is_the_plain_actor():
    torch.manual_seed(0)
    single = Actor(6, 3, 2, 8)
    assert list(single.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                                         "net.4.weight", "net.4.bias"]  # checkpoints of one-head actors load
    feat = torch.randn(5, 6)
    dist, means = single.with_head_means(feat)
    raw_mean, _ = single.net(feat).chunk(2, -1)
    assert means.shape == (1, 5, 3) and torch.equal(dist.mean, torch.tanh(raw_mean))

    ensemble = Actor(6, 3, 2, 8, heads=4)
    dist, means = ensemble.with_head_means(feat)
    assert means.shape == (4, 5, 3)
    assert torch.allclose(dist.mean, means.mean(0)) and torch.allclose(ensemble(feat).mean, dist.mean)
    assert not torch.allclose(means[0], means[1])  # independently initialised heads
    assert 0.1 <= dist.std.min() and dist.std.max() <= 1.1
    with torch.no_grad():
        for net in ensemble.net[1:]:  # heads that agree give that head's policy
            net.load_state_dict(ensemble.net[0].state_dict())
    assert torch.allclose(ensemble(feat).mean, means[0])
    with pytest.raises(ValueError, match="head"):
        Actor(6, 3, 2, 8, heads=0)
