"""What a Ray Data read task imports."""

import subprocess
import sys


def test_encoding_data_does_not_import_torch():
    """Ray Data's read tasks encode rows in fresh worker processes: importing torch there
    (1-3 s per worker) once delayed the first batch of every stream by seconds."""
    code = (
        "import sys, adasparse, adasparse.encoding, pipelines.data.encoding, pipelines.data.reading, pipelines.train.batching;"
        "print('torch' in sys.modules); sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
