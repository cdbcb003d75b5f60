"""benchmarks/update_speed.py runs every method and writes complete records (at the dry-run sizes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "update_speed.py"


def test_benchmark_writes_records_with_flops_peaks_and_phases(tmp_path):
    out = tmp_path / "speed.json"
    precision = "bf16"  # runs (emulated, slowly) on CPUs without bf16 instructions too
    subprocess.run([sys.executable, str(SCRIPT), "--presets", "tiny", "--methods", "cmil", "dac", "bc",
                    "--precision", precision, "--updates", "2", "--warmup", "1", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    from cmil.runs import source_commit
    assert result["commit"] == source_commit() and "baseline_commit" not in result  # names the code it timed
    records = {r["method"]: r for r in result["records"]}
    assert set(records) == {"cmil", "dac", "bc"}
    for rec in records.values():
        assert rec["precision"] == precision and rec["threads"] == 1 and len(rec["times"]) == 2
        assert rec["s_per_update"] > 0 and rec["maxrss_mb"] > 0 and rec["peak_fp32"] > 0 and rec["peak_bf16"] > 0
        assert rec["page_faults_per_update"] >= 0
        assert 0 < rec["kernel_ops_per_update"] < rec["ops_per_update"]  # some ops are views, not kernels
        from cmil.allocator import applies
        assert rec["malloc_tuned"] == applies(os.environ)  # timed as the `cmil` command runs
        # The phases cut each update into parts that add up to it.
        assert sum(rec["phases"].values()) == pytest.approx(rec["s_per_update"], rel=0.3)
    cmil = records["cmil"]
    assert {"world_model", "imagination", "actor", "discriminator", "critics"} <= set(cmil["phases"])
    assert cmil["gflop"] > 0 and 0 < cmil["frac_fp32"]
    assert "gflop" not in records["dac"]  # the FLOP counter cannot follow DAC's gradient penalty
