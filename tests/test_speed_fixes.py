"""The update's speed fixes give the old computation's results: each against a reference of the old code.

Sub-pixel loss layout, the disagreement without `std`, fused optimisers, the head draw kept a tensor
(so that imagination traces into one graph), and the image shifts and preprocessing without padded or
intermediate copies."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn

from cmil.config import replace
from cmil.models.networks import (
    ConvDecoder,
    conv_transpose_subpixel,
    preprocess_image,
    random_shift,
    subpixel_layout,
    to_unit_range,
)
from cmil.models.world_model import WorldModel, _HalfSquaredError
from cmil.presets import PRESETS, dry_run_config
from tiny_models import TINY

A = 2


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(B: int = 2, T: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"image": torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8, generator=g),
            "action": torch.rand(B, T, A, generator=g) * 2 - 1, "is_first": is_first}


# --- sub-pixel loss layout ----------------------------------------------------------------------
def test_subpixel_phases_are_the_transposed_conv_output_rearranged():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(8, 3, 6, stride=2)
    x = torch.randn(2, 8, 30, 30).contiguous(memory_format=torch.channels_last)
    phases = conv_transpose_subpixel(x, layer, interleave=False)
    assert phases.shape == (2, 32, 32, 2, 2, 3)
    torch.testing.assert_close(phases, subpixel_layout(layer(x).permute(0, 2, 3, 1)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="even kernel"):
        conv_transpose_subpixel(torch.randn(1, 8, 13, 13), nn.ConvTranspose2d(8, 3, 5, stride=2), interleave=False)


def test_subpixel_loss_equals_the_interleaved_loss_in_value_and_gradient():
    torch.manual_seed(0)
    decoder = ConvDecoder(12, depth=4)
    feat = torch.randn(3, 2, 12, requires_grad=True)
    image = torch.randint(0, 256, (3, 2, 64, 64, 3), dtype=torch.uint8)
    # Old: interleaved prediction (..., 3, 64, 64) against the preprocessed image.
    old = 0.5 * (decoder(feat) - preprocess_image(image)).square().sum()
    old_grads = torch.autograd.grad(old, [feat, *decoder.parameters()])
    new = _HalfSquaredError.apply(decoder(feat, subpixel=True), to_unit_range(subpixel_layout(image)))
    new_grads = torch.autograd.grad(new, [feat, *decoder.parameters()])
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-3)
    for n, o in zip(new_grads, old_grads, strict=True):
        torch.testing.assert_close(n, o, rtol=1e-4, atol=1e-4)


def test_world_model_recon_equals_the_interleaved_reference():
    torch.manual_seed(0)
    wm = WorldModel(A, TINY)
    batch = _batch()
    _, post, metrics = wm.loss(batch)
    B, T = batch["image"].shape[:2]
    ref = 0.5 * (wm.decode(wm.feat(post)) - preprocess_image(batch["image"])).square().sum() / (B * T)
    assert metrics["model/recon"] == pytest.approx(ref.item(), rel=1e-5)
    assert metrics["model/recon_mse"] == pytest.approx(2 * ref.item() / (64 * 64 * 3), rel=1e-5)


# --- disagreement -------------------------------------------------------------------------------
def test_disagreement_equals_population_std_in_value_and_gradient():
    torch.manual_seed(0)
    means = torch.randn(5, 7, 4, requires_grad=True)
    old = means.std(0, correction=0).mean(-1)
    new = WorldModel.disagreement(means)
    torch.testing.assert_close(new, old)
    w = torch.randn(7)
    torch.testing.assert_close(torch.autograd.grad((new * w).sum(), means)[0],
                               torch.autograd.grad((old * w).sum(), means)[0])


# --- fused optimisers ---------------------------------------------------------------------------
def test_fused_world_model_optimizer_steps_like_the_old_one():
    torch.manual_seed(0)
    new, old = WorldModel(A, TINY), WorldModel(A, TINY)
    old.load_state_dict(new.state_dict())
    opt_new = new.make_optimizer()
    cfg = TINY
    opt_old = torch.optim.AdamW(old.parameters(), lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay / cfg.lr)
    assert opt_new.defaults["fused"] and not opt_old.defaults["fused"]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in new.parameters()]
        for model, opt in ((new, opt_new), (old, opt_old)):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(new.parameters(), old.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["cmil", "dac", "bc"])
def test_every_method_uses_fused_optimizers(method):
    from cmil.methods.base import make_method as build_method

    cfg = replace(dry_run_config(PRESETS["default"]), task="point", method=method)
    m = build_method(cfg, A, torch.device("cpu"))
    assert all(opt.defaults["fused"] for opt in m.optimizers().values())


# --- the head draw ------------------------------------------------------------------------------
def _old_imagine_step(wm: WorldModel, state, action):
    """The old code: all K stds computed, the head read to the host with int(), then indexed."""
    x = F.elu(wm.img_in(torch.cat([state["stoch"], action], -1)))
    deter = wm.gru(x, state["deter"])
    means, stds = wm.prior_heads(deter)
    k = int(wm.draw_heads())
    mean, std = means[k], stds[k]
    stoch = torch.addcmul(mean, std, torch.randn_like(mean))
    return {"deter": deter, "stoch": stoch, "mean": mean, "std": std}, means.std(0, correction=0).mean(-1)


def test_imagine_step_equals_the_old_step_for_the_same_seed():
    torch.manual_seed(0)
    wm = WorldModel(A, TINY)
    state = {k: torch.randn(6, v.shape[-1]) for k, v in wm.initial(6).items()}
    action = torch.rand(6, A, requires_grad=True)
    outs = []
    for step in (wm.imagine_step, lambda s, a: _old_imagine_step(wm, s, a)):
        torch.manual_seed(3)
        nxt, dis = step(state, action)
        grad = torch.autograd.grad(nxt["stoch"].sum() + dis.sum(), action)[0]
        outs.append((nxt, dis, grad))
    (new, new_dis, new_grad), (old, old_dis, old_grad) = outs
    for k in old:
        torch.testing.assert_close(new[k], old[k])
    torch.testing.assert_close(new_dis, old_dis)
    torch.testing.assert_close(new_grad, old_grad)
    # An explicit head, as an int or a tensor, picks the same head.
    for head in (2, torch.tensor(2)):
        torch.manual_seed(4)
        a, _ = wm.imagine_step(state, action, sample=False, head=head)
        torch.testing.assert_close(a["mean"], wm.prior_heads(a["deter"])[0][2])


def test_imagination_traces_without_graph_breaks():
    """The old `int(self.draw_heads())` broke the graph at every step; the tensor index does not."""
    torch.manual_seed(0)
    wm = WorldModel(A, TINY)
    state = {k: torch.randn(4, v.shape[-1]) for k, v in wm.initial(4).items()}

    def rollout(state, action):
        for _ in range(3):
            state, _ = wm.imagine_step(state, action)
        return state["stoch"]

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(rollout)(state, torch.zeros(4, A))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def _pad_and_crop(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int) -> torch.Tensor:
    """The old shift: replicate-pad every float image by `pad`, crop each back at its own offset."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (x, y) in enumerate(zip(dx.tolist(), dy.tolist(), strict=True))])


def _draws(n: int, pad: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randint(0, 2 * pad + 1, (n,)), torch.randint(0, 2 * pad + 1, (n,))  # dx, then dy


def test_random_shift_of_uint8_frames_equals_padding_and_cropping_the_float_images():
    image = _batch(B=6, T=1, seed=4)["image"][:, 0]                          # (6, 64, 64, 3) uint8
    torch.manual_seed(7)
    shifted = random_shift(image, pad=4)
    dx, dy = _draws(6, 4, seed=7)
    assert (dx != 4).any() and (dy != 4).any()  # the draws do move the images
    assert shifted.dtype == torch.uint8 and shifted.is_contiguous()
    # The old augmentation: preprocess, then pad and crop the float images (N, C, H, W).
    assert torch.equal(preprocess_image(shifted), _pad_and_crop(preprocess_image(image), dx, dy, 4))


def test_sequence_shift_on_uint8_equals_the_old_float_pad_and_crop():
    image = _batch(B=4, T=3, seed=2)["image"]
    torch.manual_seed(5)
    shifted = random_shift(image)                                             # one shift per sequence
    dx, dy = _draws(4, 4, seed=5)
    B, T, H, W, C = image.shape
    as_channels = image.permute(0, 1, 4, 2, 3).reshape(B, T * C, H, W).float()  # each sequence shifted whole
    old = _pad_and_crop(as_channels, dx, dy, 4).to(torch.uint8).reshape(B, T, C, H, W).permute(0, 1, 3, 4, 2)
    assert shifted.dtype == torch.uint8 and shifted.is_contiguous()
    assert torch.equal(shifted, old)


def test_to_unit_range_copies_once_and_leaves_its_input_alone():
    image = _batch(seed=3)["image"]
    assert torch.equal(to_unit_range(image), image.float().div(255.0).sub(0.5))
    floats = torch.rand(2, 3)
    before = floats.clone()
    to_unit_range(floats)
    assert torch.equal(floats, before)
