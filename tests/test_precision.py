"""bf16 precision: resolution by hardware, the autocast regions, the GRU under autocast, the saved config.

None of this needs a CPU with bf16 instructions: without them bf16 is emulated (slow, still correct)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cmil import precision
from cmil.models import networks
from cmil.models.networks import ConvDecoder, ConvEncoder, LayerNormGRUCell, mlp
from cmil.models.world_model import WorldModel
from cmil.precision import resolve_precision, use_precision
from tiny_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_resolves_by_what_the_cpu_has(monkeypatch, fast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if fast else "fp32")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for explicitly: kept
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))


def test_cpu_flag_check_reads_the_running_machine():
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    assert precision.cpu_has_fast_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def _dtypes_inside(module: nn.Module, x: torch.Tensor) -> tuple[set[torch.dtype], torch.dtype]:
    """dtypes of every Linear/Conv output inside `module`, and the dtype of its output."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    out = module(x)
    for h in hooks:
        h.remove()
    return seen, out.dtype


@pytest.mark.parametrize("make", [lambda: (mlp(6, 3, 2, 8), torch.randn(4, 6)),
                                  lambda: (ConvEncoder(4), torch.rand(2, 3, 64, 64))])
def test_regions_run_bf16_only_inside_use_precision_and_return_fp32(make):
    module, x = make()
    assert _dtypes_inside(module, x) == ({torch.float32}, torch.float32)
    with use_precision("bf16"):
        assert _dtypes_inside(module, x) == ({torch.bfloat16}, torch.float32)
        with use_precision("fp32"):  # nesting restores the outer setting
            assert _dtypes_inside(module, x)[0] == {torch.float32}
        assert _dtypes_inside(module, x)[0] == {torch.bfloat16}
    assert _dtypes_inside(module, x)[0] == {torch.float32}
    with pytest.raises(ValueError, match="resolved"):
        with use_precision("auto"):
            pass


def test_decoder_runs_its_last_layer_in_fp32_on_the_cpu_under_bf16(monkeypatch):
    """oneDNN's bf16 backward of the last sub-pixel conv is slower than fp32: under bf16 on the CPU the middle
    transposed convs run in bf16 and the last one in fp32, and the images stay close to fp32's."""
    torch.manual_seed(0)
    decoder, feat = ConvDecoder(12, depth=4), torch.randn(3, 12)
    last_inputs: list[tuple[torch.dtype, bool]] = []
    subpixel = networks.conv_transpose_subpixel

    def spy(x, layer, interleave=True):
        last_inputs.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return subpixel(x, layer, interleave)

    monkeypatch.setattr(networks, "conv_transpose_subpixel", spy)
    ref = decoder(feat)
    with use_precision("bf16"):
        middle, out = _dtypes_inside(decoder, feat)
    assert middle == {torch.bfloat16} and out == torch.float32
    assert last_inputs == [(torch.float32, False), (torch.float32, False)]
    torch.testing.assert_close(decoder(feat), ref)
    with use_precision("bf16"):
        torch.testing.assert_close(decoder(feat), ref, atol=0.05, rtol=0.05)
    dtype_seen = lambda t: t.dtype  # noqa: E731
    half = feat.bfloat16()
    assert precision.fp32_on_cpu(dtype_seen, half) == torch.bfloat16  # outside a bf16 block: nothing to undo
    with use_precision("bf16"):
        assert precision.fp32_on_cpu(dtype_seen, half) == torch.float32
        meta = torch.empty(1, device="meta", dtype=torch.bfloat16)
        assert precision.fp32_on_cpu(dtype_seen, meta) == torch.bfloat16  # other devices keep bf16


def test_gru_cell_runs_under_autocast_and_keeps_its_state_fp32():
    torch.manual_seed(0)
    cell = LayerNormGRUCell(8, 16)
    x, h = torch.randn(5, 8), torch.randn(5, 16)
    ref = cell(x, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cell(x, h)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)  # bf16 has an 8-bit mantissa
    assert not torch.equal(out, ref)  # the dense layer did run in bf16


def test_world_model_trains_under_whole_model_autocast_and_bf16_regions():
    """Whole-model autocast failed in the GRU (`lerp` got mixed dtypes); both ways now give a loss close
    to fp32's, gradients in fp32 and finite."""
    torch.manual_seed(0)
    wm = WorldModel(2, TINY)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8, generator=g),
             "action": torch.rand(2, 4, 2, generator=g), "is_first": torch.zeros(2, 4, dtype=torch.bool)}
    torch.manual_seed(1)
    ref = wm.loss(batch)[0].item()
    for scope in (lambda: torch.autocast("cpu", dtype=torch.bfloat16), lambda: use_precision("bf16")):
        wm.zero_grad()
        torch.manual_seed(1)
        with scope():
            loss = wm.loss(batch)[0]
            loss.backward()
        assert loss.dtype == torch.float32 and loss.item() == pytest.approx(ref, rel=0.02)
        assert all(p.grad.dtype == torch.float32 and p.grad.isfinite().all() for p in wm.parameters())


def test_train_saves_the_resolved_precision(tmp_path, monkeypatch):
    from cmil.cli import main

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    run = tmp_path / "run"
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--run-dir", str(run),
                 "--precision", "auto"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["precision"] == "bf16"
    # Resuming with the unresolved request is no conflict (precision steers how, not what, it learns).
    assert main(["train", "--method", "cmil", "--task", "point", "--dry-run", "--run-dir", str(run),
                 "--precision", "auto"]) == 0
