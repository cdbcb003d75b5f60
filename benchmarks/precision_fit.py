"""The world-model fit of `cmil model` in one precision mode, for machines without its media and TensorBoard
packages (a lent GPU machine): fits on a demo directory, prints the last metric row (held-out reconstruction
and open-loop errors) as JSON, and leaves metrics.jsonl in OUT.

    python benchmarks/precision_fit.py --demos DEMOS --out OUT --mode fp32|bf16|bf16_tf32 [--seed 0]
        [--updates 1200] [--device cuda] [--preset default]

`bf16_tf32` is bf16 precision with the float32 matmuls (the RSSM's) on TF32 tensor cores, what `--tf32` does
in a run; on a CPU it equals `bf16`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cmil.model_tool import fit
from cmil.presets import PRESETS

KEYS = ("update", "wall_time", "model/recon", "eval/test_recon_mse", "eval/test_open_loop_mse",
        "eval/test_open_loop_mse_last")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=("fp32", "bf16", "bf16_tf32"), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--updates", type=int, default=1200)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.mode == "bf16_tf32"
    cfg = PRESETS[args.preset]
    try:
        fit(args.demos, args.out, args.updates, cfg.wm, cfg.batch_size, cfg.seq_len, seed=args.seed,
            log_every=max(1, args.updates // 4), device=args.device, force=True, tensorboard=False, progress=False,
            precision="fp32" if args.mode == "fp32" else "bf16")
    except Exception as exc:  # noqa: BLE001  the weights / media at the end need packages a bare machine may lack
        print(f"(the fit's outputs after metrics.jsonl were skipped: {exc})")
    last = json.loads((Path(args.out) / "metrics.jsonl").read_text().splitlines()[-1])
    print(json.dumps({"mode": args.mode, "seed": args.seed, "preset": args.preset, "device": args.device,
                      **{k: last[k] for k in KEYS if k in last}}))


if __name__ == "__main__":
    main()
