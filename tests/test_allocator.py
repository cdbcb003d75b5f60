"""The glibc malloc settings the `cmil` command runs with (cmil.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cmil import allocator

GLIBC = allocator.applies({})
PROBE = "import os, cmil.allocator as a; a.reexec_with_tuned_malloc(); print(os.environ.get('MALLOC_TRIM_THRESHOLD_'))"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in allocator.TUNED and k != allocator.OPT_OUT}
    return {**env, **extra}


@pytest.mark.skipif(not GLIBC, reason="the settings apply to glibc on Linux only")
def test_tuned_environ_adds_the_settings_and_keeps_what_is_set():
    env = allocator.tuned_environ({"PATH": "/bin", "MALLOC_MMAP_THRESHOLD_": "12345"})
    assert env["PATH"] == "/bin"
    assert env["MALLOC_MMAP_THRESHOLD_"] == "12345"  # the user's value wins
    assert env["MALLOC_TRIM_THRESHOLD_"] == allocator.TUNED["MALLOC_TRIM_THRESHOLD_"]
    assert allocator.is_tuned(env)


def test_opting_out_and_the_plain_environment_leave_glibc_alone():
    assert allocator.tuned_environ({allocator.OPT_OUT: "default"}) == {allocator.OPT_OUT: "default"}
    plain = allocator.plain_environ({**allocator.TUNED, "MALLOC_TOP_PAD_": "1", "HOME": "/root"})
    assert plain == {"MALLOC_TOP_PAD_": "1", "HOME": "/root"}
    assert not allocator.is_tuned(plain)


@pytest.mark.skipif(not GLIBC, reason="the settings apply to glibc on Linux only")
def test_the_process_reexecutes_itself_once_with_the_settings():
    out = subprocess.run([sys.executable, "-c", PROBE], env=_clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == allocator.TUNED["MALLOC_TRIM_THRESHOLD_"]
    opted_out = subprocess.run([sys.executable, "-c", PROBE], env=_clean_env(CMIL_MALLOC="default"),
                               capture_output=True, text=True, check=True)
    assert opted_out.stdout.strip() == "None"


def test_the_cmil_command_runs_through_the_reexecution():
    out = subprocess.run([sys.executable, "-m", "cmil.cli", "tasks"], env=_clean_env(), capture_output=True,
                         text=True, check=True)
    assert "mw-push" in out.stdout


def test_an_interpreter_that_cannot_be_reexecuted_runs_untuned(monkeypatch):
    for key in allocator.TUNED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    monkeypatch.setattr(allocator, "applies", lambda environ: True)
    calls = []

    def failing_execve(*args):
        calls.append(args)
        raise OSError("exec format error")

    monkeypatch.setattr(os, "execve", failing_execve)
    allocator.reexec_with_tuned_malloc()  # returns instead of raising
    assert len(calls) == 1 and not allocator.is_tuned()
