"""The model library stands alone: importing it never imports Ray."""

import subprocess
import sys


def test_importing_adasparse_does_not_import_ray():
    code = (
        "import sys, adasparse, adasparse.model, adasparse.trainer, adasparse.metrics, adasparse.synthetic;"
        "import adasparse.cli;"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
