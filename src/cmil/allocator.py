"""glibc malloc settings for training processes: keep freed tensor memory mapped instead of returning it.

glibc serves large allocations with fresh mmap'd pages and returns freed memory above its trim threshold
to the OS. A training update allocates and frees the same large activations every time, so each update
page-faults its working set in again: 5.5 million faults (~21 GB) per update at the `paper` sizes in bf16,
~200K at a DreamerV2-like size, ~7K at `default`. With both thresholds raised the memory stays in the heap
and is reused: the `paper` bf16 update takes 1.5x less CPU time on this project's CPU, smaller ones gain
less (docs/performance.md). The price is resident memory: freed blocks stay with the process, ~10% more
at the DreamerV2-like size, ~27% more at `paper`.

glibc reads these settings only when a process starts, so the `cmil` command re-executes itself once with
them (`reexec_with_tuned_malloc`). `CMIL_MALLOC=default` keeps glibc's own settings; a variable already
set in the environment wins over ours. Elsewhere (macOS, musl, Windows) nothing changes.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNED = {
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),  # allocations below 1 GiB come from the heap, not fresh mmaps
    "MALLOC_TRIM_THRESHOLD_": str(1 << 36),  # never hand freed heap memory back during a run
}
OPT_OUT = "CMIL_MALLOC"
"""Environment variable: `default` leaves glibc's malloc settings alone."""


def applies(environ: Mapping[str, str]) -> bool:
    """Whether the tuned settings apply here: Linux with glibc, and not opted out."""
    if environ.get(OPT_OUT, "tuned") == "default":
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def tuned_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the tuned malloc settings added where they apply (values already set are kept)."""
    env = dict(environ)
    if applies(environ):
        for key, value in TUNED.items():
            env.setdefault(key, value)
    return env


def plain_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the tuned settings (for timing code that predates them, as its users ran it)."""
    return {key: value for key, value in environ.items() if TUNED.get(key) != value}


def is_tuned(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process (or `environ`) runs with every tuned setting present."""
    environ = os.environ if environ is None else environ
    return all(key in environ for key in TUNED)


def reexec_with_tuned_malloc() -> None:
    """Replace this process by the same command with the tuned settings, if they apply and are missing.

    Call it first thing in a program's entry point, before large allocations: the command line
    (`sys.orig_argv`, interpreter flags included) and the rest of the environment are kept, and the new
    process finds the settings present and goes on."""
    if not applies(os.environ) or is_tuned() or not (sys.executable and sys.orig_argv):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, list(sys.orig_argv), tuned_environ(os.environ))
    except OSError:  # an interpreter that cannot be re-executed (embedded, removed): run untuned
        return
