"""zarr-python's own test suite, run with sparsezarr.Pipeline as the default pipeline.

This is the correctness referee of the pipeline (see tests/zarr_suite/run.py). It takes a few
minutes; deselect it with ``-m "not zarr_suite"`` for quick runs.
"""

from __future__ import annotations

import os
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


@pytest.mark.zarr_suite
@pytest.mark.timeout(3000)
def test_zarr_stateful_tests_with_zarr_pipeline_as_the_model():
    """zarr's stateful hypothesis tests (``--run-slow-hypothesis``), with the hierarchy machine's
    model arrays under zarr's own BatchedCodecPipeline and the store's under ours: a differential
    referee, not our pipeline against itself. ``SPARSEZARR_REFEREE_EXAMPLES`` examples per machine
    (20 here unless set; the long run is recorded in docs/reliability.md)."""
    env = {**os.environ, "SPARSEZARR_REFEREE_EXAMPLES": os.environ.get("SPARSEZARR_REFEREE_EXAMPLES", "20")}
    proc = subprocess.run([sys.executable, str(RUNNER), "--referee", "-p", "no:randomly"], capture_output=True, text=True, check=False, env=env)
    out = proc.stdout + proc.stderr
    tail = "\n".join(out.splitlines()[-60:])
    assert proc.returncode == 0, f"zarr's stateful tests found a divergence from zarr's pipeline:\n{tail}"
    assert "model BatchedCodecPipeline" in out and "store Pipeline" in out, tail


@pytest.mark.zarr_suite
@pytest.mark.timeout(1200)
def test_the_referee_finds_a_wrong_value():
    """The negative control of the referee above: with the store's arrays reading one wrong value
    (``SPARSEZARR_REFEREE_CONTROL=1``), zarr's stateful tests must fail."""
    env = {**os.environ, "SPARSEZARR_REFEREE_EXAMPLES": "10", "SPARSEZARR_REFEREE_CONTROL": "1"}
    args = [sys.executable, str(RUNNER), "--referee", "-p", "no:randomly", "-k", "test_zarr_hierarchy"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the referee did not notice an array reading a wrong value:\n" + "\n".join(out.splitlines()[-40:])
    assert "AssertionError" in out or "Falsifying" in out, out[-3000:]
