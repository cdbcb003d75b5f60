"""Replay a whole training step as one CUDA graph (`Config.cuda_graph`).

On a GPU, an eager CMIL update at the paper's sizes is bound by launching its ~8,800 kernels from Python
(~23 us each on an H200 machine, docs/performance.md), not by their arithmetic. A CUDA graph records the
kernels of one step once and replays them with a single launch; the Python code does not run again.

What a step must satisfy to be replayed (PyTorch's "whole network capture"):
- it reads its inputs from fixed tensors: `GraphedStep` copies each call's batch into static buffers;
- it never reads a value back to the host (`.item()`, `float(t)`, `if t:`, data-dependent shapes), since
  the replay cannot run the Python that would act on it; `WorldModel.graph_safe` and the tensor metrics of
  `CMIL._train_step` see to that, and `tests/test_cuda_graph.py` checks it on the CPU;
- random numbers come from the device's generator (replays draw fresh ones; a host draw would be frozen);
- optimisers are `capturable` (their step counters live on the device);
- nothing replaces a tensor the graph reads (parameters, optimiser state and buffers change in place only):
  loading a checkpoint after the capture would need a new capture (`reset`).

The first `warmup` calls run eagerly on a side stream (they build the optimiser states and let cuDNN and
cuBLAS pick their kernels, as capture requires), the next one captures the step and replays it, and
every later call only copies its inputs and replays. Each call's result is the same dict of tensors
(overwritten by the next replay): read it before the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree


class GraphedStep:
    """`step(*args)` with tensor pytrees as args, replayed as a CUDA graph after `warmup` eager calls."""

    def __init__(self, step: Callable[..., Any], warmup: int = 3):
        if not torch.cuda.is_available():
            raise RuntimeError("cuda_graph needs a CUDA device (torch.cuda.is_available() is False)")
        self.step, self.warmup = step, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_args: Any = None
        self.static_out: Any = None

    def reset(self) -> None:
        """Forget the captured graph (after something replaced tensors it reads); the next call recaptures."""
        self.graph, self.static_args, self.static_out, self.calls = None, None, None, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(*args)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.static_args = pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, args)
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.step(*self.static_args)
        else:
            for static, new in zip(pytree.tree_leaves(self.static_args), pytree.tree_leaves(args), strict=True):
                if isinstance(static, torch.Tensor):
                    if static.shape != new.shape:  # copy_ would broadcast a smaller batch silently
                        raise ValueError(f"a replayed step needs inputs of its captured shapes: {tuple(new.shape)} "
                                         f"given where {tuple(static.shape)} was captured")
                    static.copy_(new, non_blocking=True)
        self.graph.replay()  # capture only records: this replay is the capturing call's own step too
        return self.static_out
