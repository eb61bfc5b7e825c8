"""The serving benchmark (benchmarks/serving.py) still runs end to end on a tiny model.

Only that it runs and reports every variant with figures: its timings are measurements, read
from its own output (docs/serving.md), never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_benchmark_reports_every_variant_and_request_size():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--rows", "6000", "--domains", "2,3",
           "--boundaries", "0.15:0.25", "--sizes", "1,16", "--requests", "8", "--mixed-rows", "64"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert re.search(r"boundary \[0\.15, 0\.25\]: sparsity per layer [\d., ]+; \d+ domains, \d+ distinct masks", out), out
    for size in ("1", "16", "mixed 64"):
        for variant in ("trained", "masked", "pruned", "plain"):
            assert re.search(rf"{size}\s+{variant}\s+\d+\.\d+\s+\d+\.\d+\s+[\d,]+\s+\d+\.\d+x\s+\d+\.\d+x", out), out
