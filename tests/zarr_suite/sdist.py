"""zarr-python's test suite from the sdist of the *installed* zarr version.

The wheel does not ship zarr's tests, so the sdist of exactly the installed version is downloaded
once (with pip, from the package index) into ``.zarr-suite/`` at the repository root and unpacked
there. Used by ``run.py`` (zarr's whole suite with our pipeline as the default) and by
``tests/test_zarr_pipeline_suite.py`` (zarr's ``CodecPipelineTests`` subclassed for our pipeline).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".zarr-suite"


def suite_dir() -> Path:
    """The unpacked sdist of the installed zarr (downloaded on first use)."""
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
