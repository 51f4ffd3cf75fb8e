"""zarr-python's own test suite, run with sparsezarr.Pipeline as the default pipeline.

This is the correctness referee of the pipeline (see tests/zarr_suite/run.py). It takes a few
minutes; deselect it with ``-m "not zarr_suite"`` for quick runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parent / "zarr_suite" / "run.py"


@pytest.mark.zarr_suite
@pytest.mark.timeout(3000)
def test_zarr_python_test_suite_passes_with_sparsezarr_pipeline():
    proc = subprocess.run([sys.executable, str(RUNNER), "-q", "-p", "no:randomly"], capture_output=True, text=True, check=False)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert proc.returncode == 0, f"zarr-python's test suite failed with sparsezarr.Pipeline:\n{tail}"
