"""The step-time benchmark (`make bench`) still runs end to end, on a tiny table and few steps.

Only that it runs and reports every variant with figures: its timings are not asserted (they
are measurements, read from the benchmark's own output, see docs/model.md "Step time").
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_step_time_benchmark_reports_every_variant():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--batch-sizes", "64", "--table-rows", "20000",
           "--small-table-rows", "5000", "--steps", "2", "--rounds", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    for form in ("binarization", "scaling", "fusion"):
        for mode in ("domain", "instance"):
            # name, ms/step, samples/s, ratio of medians, paired ratio
            assert re.search(rf"adasparse {form}/{mode}\s+\d+\.\d+\s+[\d,]+\s+\d+\.\d+x\s+\d+\.\d+x", out), out
    for kind in ("star", "apg", "pepnet"):  # the paper's competitors beside them
        assert re.search(rf"\n{kind}\s+\d+\.\d+\s+[\d,]+\s+\d+\.\d+x\s+\d+\.\d+x", out), out
    assert re.search(r"dnn \(plain\)\s+\d+\.\d+\s+[\d,]+\s+1\.00x\s+1\.00x", out), out
    assert out.count("pruner kernels alone") == 2
    assert "table-size check" in out
