"""World-model update speed: seconds, FLOPs, fraction of the machine's matmul peak, peak memory.

For each case (the `paper` preset at batch 16 x 50 and the `default` CPU preset at its batch_size x
seq_len) a fresh subprocess builds the model, times full updates (forward + backward + clip + Adam step)
and reports:
  s_per_update    median seconds of `--updates` timed updates (after 2 warm-up updates); also the best
  gflop           FLOPs of one update counted by torch.utils.flop_counter on a plain (naive) version
                  of the same model, i.e. the model's own FLOPs (the fast paths execute ~1% more: the
                  decoder's sub-pixel layer multiplies some zero-padding taps)
  gflops          gflop / best update time
  peak_gflops     best of float32 2048^3 matmuls on the same threads, probed before every timed update
                  (the CPU may be shared: the probes track the load); also their median
  frac_peak       gflops / peak_gflops (least-disturbed update against least-disturbed matmul)
  maxrss_mb       the subprocess's peak resident memory (resource.getrusage); on CUDA also
                  cuda_peak_mb, the peak of torch.cuda.max_memory_allocated
  naive_*         the same for a straightforward PyTorch implementation of the same model (NCHW
                  convs and transposed convs, K separate head modules run at every step, per-step
                  Python loop, F.mse_loss), unless --skip-naive

    python benchmarks/world_model_speed.py                      # both presets, all threads
    python benchmarks/world_model_speed.py --cases default --threads 1 --updates 10
    python benchmarks/world_model_speed.py --device cuda --batch 32 50   # on a GPU (fp32, no TF32)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from cmil.config_sections import WorldModelConfig
from cmil.models.networks import gaussian_std, preprocess_image
from cmil.models.world_model import WorldModel

try:
    from cmil.presets import PRESETS
except ImportError:  # checkouts before cmil.presets (update_speed's baseline child imports this file's helpers)
    from cmil.config import PRESETS

ACTION_DIM = 9  # the kitchen's


def cases() -> dict[str, tuple[WorldModelConfig, int, int]]:
    default = PRESETS["default"]
    return {"paper": (PRESETS["paper"].wm, 16, 50),
            "default": (default.wm, default.batch_size, default.seq_len)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 3, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n matmul in `dtype` on the current threads (or GPU, always 8192 x 8192)."""
    if device.type == "cuda":
        n, reps = 8192, 10
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    c = torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def make_batch(B: int, T: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"image": torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8, generator=g),
             "action": torch.rand(B, T, ACTION_DIM, generator=g) * 2 - 1, "is_first": is_first}
    return {k: v.to(device) for k, v in batch.items()}


class NaiveWorldModel(nn.Module):
    """The same model written plainly: the reference for FLOPs and for the speed-up."""

    def __init__(self, action_dim: int, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        S, D, H, K, d = cfg.stoch, cfg.deter, cfg.hidden, cfg.ensemble, cfg.cnn_depth
        enc, chans = [], [3, d, 2 * d, 4 * d, 8 * d]
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            enc += [nn.Conv2d(cin, cout, 4, 2), nn.ELU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        embed = 32 * d
        self.img_in = nn.Sequential(nn.Linear(S + action_dim, H), nn.ELU())
        self.gru = nn.Linear(H + D, 3 * D, bias=False)
        self.gru_norm = nn.LayerNorm(3 * D)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(D, H), nn.ELU(), nn.Linear(H, 2 * S)) for _ in range(K))
        self.post = nn.Sequential(nn.Linear(D + embed, H), nn.ELU(), nn.Linear(H, 2 * S))
        self.dec_in = nn.Linear(S + D, 32 * d)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32 * d, 4 * d, 5, 2), nn.ELU(),
                                     nn.ConvTranspose2d(4 * d, 2 * d, 5, 2), nn.ELU(),
                                     nn.ConvTranspose2d(2 * d, d, 6, 2), nn.ELU(), nn.ConvTranspose2d(d, 3, 6, 2))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        image, action, is_first = batch["image"], batch["action"], batch["is_first"]
        B, T = image.shape[:2]
        x = preprocess_image(image).contiguous()
        embed = self.encoder(x.reshape(B * T, 3, 64, 64)).reshape(B, T, -1)
        deter = torch.zeros(B, cfg.deter, device=image.device)
        stoch = torch.zeros(B, cfg.stoch, device=image.device)
        feats, kls = [], []
        for t in range(T):
            keep = (~is_first[:, t]).float()[:, None]
            deter, stoch, act = deter * keep, stoch * keep, action[:, t] * keep
            h = self.img_in(torch.cat([stoch, act], -1))
            reset, cand, update = self.gru_norm(self.gru(torch.cat([h, deter], -1))).chunk(3, -1)
            cand = torch.tanh(torch.sigmoid(reset) * cand)
            update = torch.sigmoid(update - 1)
            deter = update * cand + (1 - update) * deter
            stats = [head(deter) for head in self.heads]
            k = int(torch.randint(cfg.ensemble, ()))
            p_mean, p_raw = stats[k].chunk(2, -1)
            p_std = gaussian_std(p_raw, cfg.min_std)
            _ = torch.stack([s.chunk(2, -1)[0] for s in stats]).std(0).mean(-1)  # disagreement
            q_mean, q_raw = self.post(torch.cat([deter, embed[:, t]], -1)).chunk(2, -1)
            q_std = gaussian_std(q_raw, cfg.min_std)
            stoch = q_mean + q_std * torch.randn_like(q_std)
            q, p = torch.distributions.Normal(q_mean, q_std), torch.distributions.Normal(p_mean, p_std)
            q_sg = torch.distributions.Normal(q_mean.detach(), q_std.detach())
            p_sg = torch.distributions.Normal(p_mean.detach(), p_std.detach())
            kls.append((torch.distributions.kl_divergence(q_sg, p).sum(-1),
                        torch.distributions.kl_divergence(q, p_sg).sum(-1)))
            feats.append(torch.cat([stoch, deter], -1))
        feat = torch.stack(feats, 1).reshape(B * T, -1)
        pred = self.decoder(self.dec_in(feat).reshape(B * T, -1, 1, 1))
        recon = 0.5 * F.mse_loss(pred, x.reshape(B * T, 3, 64, 64), reduction="sum") / (B * T)
        lhs = torch.stack([a for a, _ in kls]).mean()
        rhs = torch.stack([b for _, b in kls]).mean()
        kl = cfg.kl_balance * lhs.clamp(min=cfg.kl_free) + (1 - cfg.kl_balance) * rhs.clamp(min=cfg.kl_free)
        return recon + cfg.kl_scale * kl

    def train_step(self, batch: dict[str, torch.Tensor]) -> None:
        if not hasattr(self, "opt"):
            self.opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr, eps=self.cfg.eps)
        self.opt.zero_grad()
        self.loss(batch).backward()
        nn.utils.clip_grad_norm_(self.parameters(), self.cfg.grad_clip)
        self.opt.step()


def timed_update(model, batch, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    model.train_step(batch)
    sync(device)
    return time.perf_counter() - start


def count_flops(model, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.train_step(batch)
    return counter.get_total_flops()


def child(name: str, updates: int, naive: bool, device: torch.device, shape: list[int] | None) -> dict:
    """Measure one case in this (fresh) process and return its record.

    The optimised update, the naive update and a matmul peak probe take turns round by round, so that
    a changing load on a shared CPU hits all three alike.
    """
    cfg, B, T = cases()[name]
    B, T = shape or (B, T)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batch = make_batch(B, T, device)
    load_before = os.getloadavg()[0]
    model = WorldModel(ACTION_DIM, cfg).to(device)
    for _ in range(2):
        model.train_step(batch)
    rec = {"case": name, "device": str(device), "batch": [B, T], "threads": torch.get_num_threads(),
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "gflop_executed": count_flops(model, batch) / 1e9,
           # Peak memory of the optimised model alone (the naive one is built after this reading).
           "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_model_mb": rss0}
    if device.type == "cuda":
        rec["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        rec["gpu"] = torch.cuda.get_device_name(device)
    reference = NaiveWorldModel(ACTION_DIM, cfg).to(device)
    rec["gflop"] = count_flops(reference, batch) / 1e9
    if naive:
        reference.train_step(batch)
    times, naive_times, peaks = [], [], []
    for _ in range(updates):
        peaks.append(matmul_peak(device, n=2048, reps=3))
        times.append(timed_update(model, batch, device))
        if naive:
            naive_times.append(timed_update(reference, batch, device))
    peaks.append(matmul_peak(device, n=2048, reps=3))
    rec["s_per_update"] = statistics.median(times)
    rec["s_per_update_best"] = min(times)
    rec["peak_gflops"] = max(peaks)
    rec["peak_gflops_median"] = statistics.median(peaks)
    # Best against best: the least-disturbed update against the least-disturbed matmul.
    rec["gflops"] = rec["gflop"] / rec["s_per_update_best"]
    rec["frac_peak"] = rec["gflops"] / rec["peak_gflops"]
    if naive:
        rec["naive_s_per_update"] = statistics.median(naive_times)
        rec["naive_s_per_update_best"] = min(naive_times)
        rec["naive_frac_peak"] = rec["gflop"] / rec["naive_s_per_update_best"] / rec["peak_gflops"]
        rec["speedup"] = rec["naive_s_per_update"] / rec["s_per_update"]
    rec["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(cases()), choices=list(cases()))
    parser.add_argument("--updates", type=int, default=5, help="timed updates per case (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--skip-naive", action="store_true", help="do not time the naive reference")
    parser.add_argument("--out", default=None, help="append the JSON records to this file")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--batch", type=int, nargs=2, default=None, metavar=("B", "T"),
                        help="override every case's batch shape")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    if args.child:
        torch.set_num_threads(threads)
        print(json.dumps(child(args.child, args.updates, not args.skip_naive, torch.device(args.device),
                               args.batch)))
        return
    print(f"cpu: {os.cpu_count()} cores, torch {torch.__version__}, threads {threads}, "
          f"load average {os.getloadavg()}", flush=True)
    for name in args.cases:
        cmd = [sys.executable, __file__, "--child", name, "--updates", str(args.updates), "--threads", str(threads),
               "--device", args.device]
        if args.batch:
            cmd += ["--batch", *map(str, args.batch)]
        if args.skip_naive:
            cmd.append("--skip-naive")
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rec = json.loads(result.stdout.strip().splitlines()[-1])
        line = (f"{name:8s} batch {rec['batch'][0]}x{rec['batch'][1]}  {rec['params_m']:.1f}M params  "
                f"{rec['s_per_update']:.3f} s/update (best {rec['s_per_update_best']:.3f})  {rec['gflop']:.1f} GFLOP  "
                f"{rec['gflops']:.1f} GFLOP/s  "
                f"= {100 * rec['frac_peak']:.0f}% of {rec['peak_gflops']:.0f} GFLOP/s matmul peak  "
                f"maxrss {rec['maxrss_mb']:.0f} MB" + (f"  cuda peak {rec['cuda_peak_mb']:.0f} MB on {rec['gpu']}"
                                                       if "gpu" in rec else ""))
        if "speedup" in rec:
            line += (f"  | naive {rec['naive_s_per_update']:.3f} s/update ({100 * rec['naive_frac_peak']:.0f}% of peak;"
                     f" optimised is {rec['speedup']:.2f}x faster)")
        print(line + f"  load {rec['load_avg_1min']}", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
