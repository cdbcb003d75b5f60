"""World model: shapes, filtering equivalences, KL terms, ensemble heads, training, and the `cmil model` tool."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cmil.config import replace
from cmil.config_sections import WorldModelConfig
from cmil.data.episodes import save_episode
from cmil.models.networks import (
    conv_transpose_stem,
    conv_transpose_subpixel,
    diag_gaussian_kl,
    gaussian_std,
    preprocess_image,
)
from cmil.models.world_model import STATE_KEYS, WorldModel, focus_pixels, focus_scale, image_to_uint8
from tiny_models import TINY

A = 2


def make_batch(B: int = 2, T: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth synthetic frames (a bright square moving with the actions) with episode starts."""
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(B, T, A, generator=g) * 2 - 1
    image = torch.full((B, T, 64, 64, 3), 40, dtype=torch.uint8)
    pos = torch.cumsum(action, 1).mul(8).round().long() + 28
    for b in range(B):
        for t in range(T):
            y, x = pos[b, t].clamp(0, 56).tolist()
            image[b, t, y:y + 8, x:x + 8] = torch.tensor([220, 180, 60], dtype=torch.uint8)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    action[:, 0] = 0
    return {"image": image, "action": action, "is_first": is_first}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def wm() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(A, TINY)


def test_shapes_of_every_method(wm):
    B, T, S, D = 2, 6, TINY.stoch, TINY.deter
    batch = make_batch(B, T)
    embed = wm.encode(batch["image"])
    assert embed.shape == (B, T, wm.embed_dim)
    state = wm.initial(B)
    assert {k: v.shape for k, v in state.items()} == {"deter": (B, D), "stoch": (B, S), "mean": (B, S), "std": (B, S)}
    assert all((v == 0).all() for v in state.values())
    post, prior = wm.obs_step(state, batch["action"][:, 0], embed[:, 0], batch["is_first"][:, 0])
    assert post["deter"].shape == (B, D) and post["stoch"].shape == (B, S) and prior["disagreement"].shape == (B,)
    post, prior = wm.observe(embed, batch["action"], batch["is_first"])
    for k in STATE_KEYS:
        assert post[k].shape[:2] == (B, T) and prior[k].shape[:2] == (B, T)
    assert prior["disagreement"].shape == (B, T) and prior["head"].shape == (T,)
    feat = wm.feat(post)
    assert feat.shape == (B, T, wm.feat_dim) and wm.feat_dim == S + D
    assert wm.decode(feat).shape == (B, T, 3, 64, 64)
    nxt, dis = wm.imagine_step({k: v[:, -1] for k, v in post.items()}, torch.zeros(B, A))
    assert nxt["stoch"].shape == (B, S) and dis.shape == (B,)
    loss, post, metrics = wm.loss(batch)
    assert loss.dim() == 0 and post["stoch"].shape == (B, T, S)
    assert {"model/recon", "model/kl", "model/kl_raw", "model/disagreement", "model/prior_std",
            "model/post_std"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    # The terms the loss sums, as the logged metrics report them (kl times kl_scale).
    torch.manual_seed(3)
    terms, _, terms_metrics = wm.loss_terms(batch)
    torch.manual_seed(3)
    total = wm.loss(batch)[0]
    assert set(terms) == {"recon", "kl"} and torch.allclose(terms["recon"] + terms["kl"], total)
    assert terms["recon"].item() == pytest.approx(terms_metrics["model/recon"], rel=1e-5)
    assert terms["kl"].item() == pytest.approx(wm.cfg.kl_scale * terms_metrics["model/kl"], rel=1e-5)
    assert wm.open_loop(batch, context=2).shape == (B, T, 3, 64, 64)


def test_observe_equals_obs_step_loop_with_resets(wm):
    batch = make_batch(3, 7)
    batch["is_first"][1, 4] = True  # an episode starting mid-sequence in one row only
    embed = wm.encode(batch["image"])
    post, prior = wm.observe(embed, batch["action"], batch["is_first"], sample=False)
    state = wm.initial(3)
    for t in range(7):
        state, step_prior = wm.obs_step(state, batch["action"][:, t], embed[:, t], batch["is_first"][:, t],
                                        sample=False)
        for k in STATE_KEYS:
            torch.testing.assert_close(post[k][:, t], state[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(prior["disagreement"][:, t], step_prior["disagreement"], atol=1e-5, rtol=1e-5)


def test_is_first_resets_state(wm):
    batch = make_batch(2, 8)
    batch["is_first"][:, 3] = True
    embed = wm.encode(batch["image"])
    post, _ = wm.observe(embed, batch["action"], batch["is_first"], sample=False)
    fresh, _ = wm.observe(embed[:, 3:], batch["action"][:, 3:], batch["is_first"][:, 3:], sample=False)
    for k in STATE_KEYS:
        torch.testing.assert_close(post[k][:, 3:], fresh[k], atol=1e-5, rtol=1e-5)


def test_gaussian_kl_values():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    s1, s2 = torch.rand(50, 4, generator=g) + 0.1, torch.rand(50, 4, generator=g) + 0.1
    assert (diag_gaussian_kl(m1, s1, m2, s2) >= 0).all()
    torch.testing.assert_close(diag_gaussian_kl(m1, s1, m1, s1), torch.zeros(50))
    one, zero = torch.ones(1, 3), torch.zeros(1, 3)
    torch.testing.assert_close(diag_gaussian_kl(zero, one, one, one), torch.tensor([1.5]))  # 0.5 per dim
    expected = 3 * (math.log(2.0) + 1 / 8 - 0.5)  # KL(N(0,1) || N(0,2)) per dim
    torch.testing.assert_close(diag_gaussian_kl(zero, one, zero, 2 * one), torch.tensor([expected]))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1), torch.distributions.Normal(m2, s2))
    torch.testing.assert_close(diag_gaussian_kl(m1, s1, m2, s2), ref.sum(-1))


def test_std_transform():
    torch.testing.assert_close(gaussian_std(torch.zeros(1), 0.1), torch.tensor([1.1]))
    big = gaussian_std(torch.tensor([-1e4, 1e4]), 0.1)
    torch.testing.assert_close(big, torch.tensor([0.1, 2.1]))


def _states(mean_post, mean_prior, std=1.0):
    ones = torch.full_like(mean_post, std)
    return {"mean": mean_post, "std": ones.clone()}, {"mean": mean_prior, "std": ones.clone()}


def test_free_nats_clamp_and_balance(wm):
    # Identical distributions: KL = 0, clamped to the free nats, no gradient.
    mean = torch.zeros(2, 3, TINY.stoch, requires_grad=True)
    post, prior = _states(mean, mean.detach().clone().requires_grad_())
    loss, raw = wm.kl_loss(post, prior)
    assert raw.item() == 0.0 and loss.item() == pytest.approx(TINY.kl_free)
    loss.backward()
    assert (mean.grad == 0).all()
    # Far apart: loss equals the KL, and the prior gets kl_balance of the gradient, the posterior the rest.
    q = torch.zeros(2, 3, TINY.stoch, requires_grad=True)
    p = torch.full((2, 3, TINY.stoch), 2.0, requires_grad=True)
    post, prior = _states(q, p)
    loss, raw = wm.kl_loss(post, prior)
    assert raw.item() == pytest.approx(0.5 * 4 * TINY.stoch) and loss.item() == pytest.approx(raw.item())
    loss.backward()
    full = 2.0 / 6  # d/dp of the mean over (b, t) of 0.5 * sum_d (p - q)^2 is (p - q) / (B * T)
    torch.testing.assert_close(p.grad, torch.full_like(p, TINY.kl_balance * full))
    torch.testing.assert_close(q.grad, torch.full_like(q, -(1 - TINY.kl_balance) * full))


def test_each_head_gets_gradient_only_when_drawn():
    torch.manual_seed(3)
    cfg = WorldModelConfig(deter=16, hidden=16, stoch=4, ensemble=6, cnn_depth=4, kl_free=0.0)
    wm = WorldModel(A, cfg)
    batch = make_batch(2, 3)
    post, prior = wm.observe(wm.encode(batch["image"]), batch["action"], batch["is_first"])
    drawn = set(prior["head"].tolist())
    assert 0 < len(drawn) < cfg.ensemble  # 3 steps, 6 heads
    wm.kl_loss(post, prior)[0].backward()
    for k in range(cfg.ensemble):
        norms = [wm.prior_hidden.weight.grad[k].norm(), wm.prior_out.weight.grad[k].norm(),
                 wm.prior_out.bias.grad[k].norm()]
        assert all((n > 0) == (k in drawn) for n in norms), (k, drawn, norms)
    # One imagination step through a chosen head: only that head is reached by its sample.
    wm.zero_grad()
    state = {k: v[:, -1].detach() for k, v in post.items()}
    nxt, _ = wm.imagine_step(state, torch.zeros(2, A), head=4)
    nxt["stoch"].sum().backward()
    grads = wm.prior_out.weight.grad.flatten(1).norm(dim=1)
    assert grads[4] > 0 and (grads[torch.arange(6) != 4] == 0).all()


def test_disagreement_zero_iff_heads_equal(wm):
    batch = make_batch(2, 4)
    embed = wm.encode(batch["image"])
    _, prior = wm.observe(embed, batch["action"], batch["is_first"])
    assert (prior["disagreement"] > 0).all()
    with torch.no_grad():
        for p in (wm.prior_hidden.weight, wm.prior_hidden.bias, wm.prior_out.weight, wm.prior_out.bias):
            p.copy_(p[:1].expand_as(p))
    _, prior = wm.observe(embed, batch["action"], batch["is_first"])
    assert prior["disagreement"].abs().max() < 1e-6
    _, dis = wm.imagine_step(wm.initial(2), torch.ones(2, A))
    assert dis.abs().max() < 1e-6


def test_disagreement_is_std_of_head_means(wm):
    deter = torch.randn(5, TINY.deter)
    means, stds = wm.prior_heads(deter)
    assert means.shape == (TINY.ensemble, 5, TINY.stoch) and (stds > TINY.min_std).all()
    expected = torch.from_numpy(means.detach().numpy().std(axis=0).mean(-1))
    torch.testing.assert_close(wm.disagreement(means).detach(), expected)


def test_sequence_prior_comes_from_the_drawn_head(wm):
    batch = make_batch(2, 9)
    post, prior = wm.observe(wm.encode(batch["image"]), batch["action"], batch["is_first"], sample=False)
    means, stds = wm.prior_heads(post["deter"].reshape(-1, TINY.deter))
    means, stds = means.view(TINY.ensemble, 2, 9, -1), stds.view(TINY.ensemble, 2, 9, -1)
    for t, k in enumerate(prior["head"].tolist()):
        torch.testing.assert_close(prior["mean"][:, t], means[k, :, t])
        torch.testing.assert_close(prior["std"][:, t], stds[k, :, t])
    torch.testing.assert_close(prior["disagreement"], wm.disagreement(means))
    torch.testing.assert_close(prior["stoch"], prior["mean"])  # sample=False


def test_imagine_step_is_differentiable_in_state_and_action(wm):
    state = {k: v.requires_grad_() for k, v in wm.initial(3).items()}
    state["stoch"] = torch.randn(3, TINY.stoch, requires_grad=True)
    action = torch.randn(3, A, requires_grad=True)
    nxt, dis = wm.imagine_step(state, action)
    (nxt["stoch"].sum() + dis.sum()).backward()
    assert action.grad.abs().sum() > 0 and state["stoch"].grad.abs().sum() > 0


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    wm = WorldModel(A, WorldModelConfig(deter=32, hidden=32, stoch=8, ensemble=3, cnn_depth=8, lr=1e-3))
    batch = make_batch(4, 8)
    first = wm.loss(batch)[0].item()
    for _ in range(40):
        _, metrics = wm.train_step(batch)
    assert metrics["model/loss"] < 0.5 * first, (first, metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_optimizer_settings(wm):
    opt = wm.make_optimizer()
    group = opt.param_groups[0]
    assert group["lr"] == TINY.lr and group["eps"] == TINY.eps
    assert group["lr"] * group["weight_decay"] == pytest.approx(TINY.weight_decay)  # w <- (1 - wd) w per step
    before = wm.post_out.weight.detach().clone()
    _, metrics = wm.train_step(make_batch())
    assert metrics["model/grad_norm"] > 0 and not torch.equal(before, wm.post_out.weight)


def test_decoder_fast_paths_match_conv_transpose():
    torch.manual_seed(0)
    for k, size in [(5, 5), (6, 13), (6, 30), (4, 7)]:
        layer = nn.ConvTranspose2d(6, 3, k, stride=2)
        x = torch.randn(2, 6, size, size)
        torch.testing.assert_close(conv_transpose_subpixel(x, layer), layer(x), atol=1e-5, rtol=1e-5)
    layer = nn.ConvTranspose2d(8, 5, 5, stride=2)
    x = torch.randn(3, 8)
    torch.testing.assert_close(conv_transpose_stem(x, layer), layer(x[:, :, None, None]), atol=1e-5, rtol=1e-5)


def test_image_roundtrip():
    image = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert torch.equal(image_to_uint8(preprocess_image(image)), image)


def _write_demo_dir(path, episodes: int = 3, steps: int = 24):
    rng = np.random.default_rng(0)
    for i in range(episodes):
        batch = make_batch(1, steps + 1, seed=i)
        rows = steps + 1
        ep = {"image": batch["image"][0].numpy(), "action": batch["action"][0].numpy().clip(-1, 1),
              "reward": rng.random(rows).astype(np.float32), "success": np.zeros(rows, bool),
              "is_first": np.arange(rows) == 0, "is_last": np.arange(rows) == rows - 1,
              "is_terminal": np.zeros(rows, bool)}
        save_episode(path, ep, name=f"ep{i:03d}-{steps}.npz")


def test_model_tool_fits_and_writes_outputs(tmp_path):
    import imageio.v3 as iio
    from safetensors.torch import load_file

    from cmil.model_tool import add_parser, fit

    demos, out = tmp_path / "demos", tmp_path / "out"
    _write_demo_dir(demos)
    row = fit(demos, out, updates=4, wm_cfg=TINY, batch_size=2, seq_len=8, context=2, horizon=3,
              log_every=2, tensorboard=False, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [0, 2, 4] and rows[-1] == row
    for key in ("model/recon", "model/kl", "model/disagreement", "eval/train_open_loop_mse",
                "eval/test_open_loop_mse", "eval/test_recon_mse"):
        assert math.isfinite(rows[-1][key]), key
    wm = WorldModel(A, TINY)
    wm.load_state_dict(load_file(str(out / "world_model.safetensors")))
    grid = iio.imread(out / "open_loop.png")
    assert grid.shape == (3 * (2 * 64 + 4), 5 * 64 + 2, 3)  # 3 held-out windows, 2 + 3 frames each
    assert (out / "open_loop.mp4").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["world_model"]["deter"] == TINY.deter
    with pytest.raises(FileExistsError):
        fit(demos, out, updates=1, wm_cfg=TINY, batch_size=2, seq_len=8, tensorboard=False, progress=False)
    # The same through the `cmil model` subcommand (default preset sizes, a tiny batch).
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["model", "--demos", str(demos), "--out", str(tmp_path / "cli"), "--updates", "1",
                              "--batch-size", "2", "--seq-len", "6", "--context", "2", "--horizon", "2",
                              "--precision", "bf16"])
    assert args.func(args) == 0
    assert (tmp_path / "cli" / "world_model.safetensors").exists()
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["precision"] == "bf16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    torch.manual_seed(0)
    wm = WorldModel(A, TINY).cuda()
    batch = {k: v.cuda() for k, v in make_batch().items()}
    _, metrics = wm.train_step(batch)
    assert all(math.isfinite(v) for v in metrics.values())
    nxt, dis = wm.imagine_step(wm.initial(2), torch.zeros(2, A, device="cuda"))
    assert nxt["stoch"].is_cuda and dis.is_cuda


def test_image_posterior_ignores_the_recurrent_state():
    # posterior="image": q(s_t | x_t) alone, so the posterior's mean does not change with h_t.
    torch.manual_seed(0)
    wm = WorldModel(A, WorldModelConfig(**{**TINY.__dict__, "posterior": "image"}))
    batch = make_batch(B=2, T=4)
    embed = wm.encode(batch["image"])
    post, _ = wm.observe(embed, batch["action"], batch["is_first"], sample=False)
    state = {k: v + 1.0 for k, v in wm.initial(2).items()}
    other, _ = wm.observe(embed, batch["action"], torch.zeros_like(batch["is_first"]), state, sample=False)
    torch.testing.assert_close(post["mean"], other["mean"])
    assert not torch.allclose(post["deter"], other["deter"])
    # The filter's posterior does depend on h_t.
    torch.manual_seed(0)
    filt = WorldModel(A, TINY)
    a, _ = filt.observe(filt.encode(batch["image"]), batch["action"], batch["is_first"], sample=False)
    b, _ = filt.observe(filt.encode(batch["image"]), batch["action"], torch.zeros_like(batch["is_first"]),
                        state, sample=False)
    assert not torch.allclose(a["mean"], b["mean"])


@pytest.mark.parametrize("posterior", ["filter", "image"])
def test_observe_acting_with_the_recorded_actions_equals_observe(posterior):
    # An `act` that returns the recorded next action filters exactly as `observe` on the recording.
    torch.manual_seed(0)
    wm = WorldModel(A, WorldModelConfig(**{**TINY.__dict__, "posterior": posterior}))
    batch = make_batch(B=2, T=5)
    embed = wm.encode(batch["image"])
    step = iter(range(1, 5))
    acting = wm.observe_acting(embed, batch["is_first"], lambda f: batch["action"][:, next(step, 4)],
                               batch["action"][:, 0], sample=False)
    post, _ = wm.observe(embed, batch["action"], batch["is_first"], sample=False)
    for key in STATE_KEYS:
        torch.testing.assert_close(acting[key], post[key])


@pytest.mark.parametrize("agent_feat, size", [("sample", 20), ("mean", 20), ("stoch", 4)])
def test_agent_feature_choices(agent_feat, size):
    wm = WorldModel(A, WorldModelConfig(**{**TINY.__dict__, "agent_feat": agent_feat}))
    state = {"deter": torch.randn(3, 16), "stoch": torch.randn(3, 4), "mean": torch.randn(3, 4), "std": torch.ones(3, 4)}
    feat = wm.agent_feat(state)
    assert feat.shape == (3, size) == (3, wm.agent_feat_dim)
    expected = {"sample": torch.cat([state["stoch"], state["deter"]], -1),
                "mean": torch.cat([state["mean"], state["deter"]], -1), "stoch": state["mean"]}[agent_feat]
    torch.testing.assert_close(feat, expected)


def test_frame_feature_is_the_image_posterior_mean_and_shifts_each_frame():
    # frame_feat reads one frame at a time: unshifted it equals what observe gives the agent.
    torch.manual_seed(0)
    wm = WorldModel(A, WorldModelConfig(**{**TINY.__dict__, "posterior": "image", "agent_feat": "stoch"}))
    batch = make_batch(B=2, T=4)
    post, _ = wm.observe(wm.encode(batch["image"]), batch["action"], batch["is_first"], sample=False)
    torch.testing.assert_close(wm.frame_feat(batch["image"]), wm.agent_feat(post))
    # Shifted, every frame gets its own offset: identical frames give different features.
    same = batch["image"][:1, :1].expand(1, 16, 64, 64, 3)
    shifted = wm.frame_feat(same, shift=True)
    assert shifted.shape == (1, 16, 4)
    assert len({tuple(f.round(decimals=5).tolist()) for f in shifted[0]}) > 1


def test_encoder_depth_widens_the_encoder_only():
    """wm.encoder_depth sets the encoder's channels apart from the decoder's; 0 keeps them equal."""
    from dataclasses import replace

    torch.manual_seed(0)
    wide = WorldModel(A, replace(TINY, encoder_depth=8))
    same = WorldModel(A, TINY)
    assert wide.encoder.net[0].out_channels == 8 and same.encoder.net[0].out_channels == TINY.cnn_depth
    assert wide.embed_dim == 2 * same.embed_dim
    assert [p.shape for p in wide.decoder.parameters()] == [p.shape for p in same.decoder.parameters()]
    batch = make_batch()
    post, prior = wide.observe(wide.encode(batch["image"]), batch["action"], batch["is_first"])
    assert post["mean"].shape == (2, 6, TINY.stoch) and torch.isfinite(wide.loss(batch)[0]).all()


def test_focus_pixels_mark_what_moves_or_what_is_not_background_and_weight_their_error():
    frames = torch.zeros(3, 4, 2, 2)
    frames[0, 1, 0, 0] = 0.5  # frame 1 differs from frames 0 and 2 at one pixel
    frames[0, 3, 1, 1] = 0.01  # below the threshold: sensor noise, not a moving object
    frames[1, :, 1, 0] = -0.3  # a still object in one of three windows: not moving, not background
    changed = focus_pixels(frames, "change")
    assert changed[0, :, 0, 0].tolist() == [True, True, True, False] and changed.sum() == 3
    foreground = focus_pixels(frames, "foreground")
    assert foreground[1, :, 1, 0].all() and foreground[0, 1, 0, 0] and foreground.sum() == 5
    scale = focus_scale(frames, "change", 8.0)
    assert torch.allclose(scale.square()[changed], torch.tensor(9.0)) and torch.all(scale[~changed] == 1)


@pytest.mark.parametrize("focus", ["change", "foreground"])
def test_reconstruction_focus_weight_adds_the_weighted_error_of_the_focus_pixels_only(wm, focus):
    weighted = WorldModel(A, replace(TINY, recon_focus_weight=9.0, recon_focus=focus))
    weighted.load_state_dict(wm.state_dict())

    def recon(model, batch):
        torch.manual_seed(1)  # the same posterior samples for both models
        terms, post, _ = model.loss_terms(batch)
        return terms["recon"].item(), post

    moving = make_batch(2, 6)
    blank = {**moving, "image": torch.full_like(moving["image"], 40)}
    assert recon(weighted, blank)[0] == pytest.approx(recon(wm, blank)[0], rel=1e-6)  # nothing to focus on: the plain sum
    plain, post = recon(wm, moving)
    target = preprocess_image(moving["image"])
    with torch.no_grad():
        error = (wm.decode(wm.feat(post)) - target).square()
    extra = 9.0 * 0.5 * (error * focus_pixels(target, focus)).sum().item() / 12  # B * T = 12 frames
    assert extra > 0.05 * plain and recon(weighted, moving)[0] == pytest.approx(plain + extra, rel=1e-4)


@pytest.mark.parametrize("posterior", ["filter", "image"])
def test_overshooting_kl_is_the_mean_over_k_of_each_open_loop_k_step_kl(posterior, monkeypatch):
    """wm.overshoot_steps: against a plain loop over every start and k (one head and no sampling, so both are
    deterministic), with an episode start inside the window that cuts the rollouts crossing it."""
    cfg = replace(TINY, ensemble=1, kl_free=0.0, posterior=posterior, overshoot_steps=3, overshoot_weight=2.0)
    torch.manual_seed(0)
    wm = WorldModel(A, cfg)
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)
    batch = make_batch(2, 7)
    batch["is_first"][1, 4] = True
    action, is_first = batch["action"], batch["is_first"]
    post, prior = wm.observe(wm.encode(batch["image"]), action, is_first, sample=False)
    got = wm.overshoot_kl(post, prior, action, is_first)
    B, T = action.shape[:2]
    per_k = []
    for k in (2, 3):
        kls = []
        for b in range(B):
            for t in range(T - k):
                if is_first[b, t + 1: t + k + 1].any():
                    continue
                state = {key: post[key][b:b + 1, t] for key in STATE_KEYS}
                for j in range(1, k + 1):
                    state, _ = wm.imagine_step(state, action[b:b + 1, t + j], sample=False)
                kls.append(diag_gaussian_kl(post["mean"][b, t + k], post["std"][b, t + k], state["mean"][0],
                                            state["std"][0]))
        per_k.append(torch.stack(kls).mean())
    assert got.item() == pytest.approx(torch.stack(per_k).mean().item(), rel=1e-5)
    # It enters the loss as its own term, times overshoot_weight and kl_scale; off, the terms are the usual two.
    terms, _, metrics = wm.loss_terms(batch)
    assert terms["overshoot"].item() == pytest.approx(2.0 * metrics["model/overshoot"], rel=1e-5)
    torch.manual_seed(1)
    total = wm.loss(batch)[0]
    torch.manual_seed(1)
    terms = wm.loss_terms(batch)[0]
    assert total.item() == pytest.approx(sum(terms.values()).item(), rel=1e-6)
    wm.loss(batch)[0].backward()
    assert wm.prior_out.weight.grad.abs().sum() > 0
    off = WorldModel(A, replace(cfg, overshoot_steps=1))
    assert set(off.loss_terms(batch)[0]) == {"recon", "kl"}
