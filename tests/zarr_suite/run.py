#!/usr/bin/env python
"""Run zarr-python's own test suite with ``sparsezarr.Pipeline`` as the default codec pipeline.

The test suite is taken from the sdist of the *installed* zarr version (downloaded once into
``.zarr-suite/`` at the repository root), and run with ``ZARR_CODEC_PIPELINE__PATH`` pointing at
our pipeline: zarr's conftest resets its configuration around every test, which re-reads the
environment, so every array in every test uses sparsezarr.

Tests that are known not to pass are listed in ``known_failures.txt`` beside this script, one node
id per line with a one-line reason. They still run, as strict expected failures: if one starts to
pass, the run fails until it is removed from the list. The list is meant to shrink to zero.

Usage: ``python tests/zarr_suite/run.py [extra pytest arguments]``
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".zarr-suite"


def suite_dir() -> Path:
    import zarr

    version = zarr.__version__
    target = CACHE / f"zarr-{version}"
    if (target / "tests").is_dir():
        return target
    CACHE.mkdir(exist_ok=True)
    sdist = CACHE / f"zarr-{version}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"zarr=={version}", "--no-binary", ":all:", "--no-deps", "-q", "-d", str(CACHE)],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    if not (target / "tests").is_dir():
        raise SystemExit(f"no tests/ in {sdist}")
    return target


def main() -> int:
    target = suite_dir()
    env = dict(os.environ)
    env["ZARR_CODEC_PIPELINE__PATH"] = "sparsezarr.Pipeline"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["SPARSEZARR_KNOWN_FAILURES"] = str(HERE / "known_failures.txt")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests",
        "-p",
        "sparsezarr_suite_plugin",
        "-p",
        "no:cacheprovider",
        "--ignore=tests/benchmarks",
        "-q",
        "-o",
        "addopts=",
        "-ra",
        "--timeout=600",
        *sys.argv[1:],
    ]
    return subprocess.run(cmd, cwd=target, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
