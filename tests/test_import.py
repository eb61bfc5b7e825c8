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
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_encoding_data_does_not_import_torch():
    """Ray Data's read tasks encode rows in fresh worker processes: importing torch there
    (1-3 s per worker) once delayed the first batch of every stream by seconds."""
    code = (
        "import sys, adasparse, adasparse.encoding, pipelines.transforms, pipelines.ingest;"
        "print('torch' in sys.modules); sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_lazy_exports_resolve():
    import adasparse

    assert adasparse.build_model.__module__ == "adasparse.model"
    assert set(adasparse.__all__) <= set(dir(adasparse))
