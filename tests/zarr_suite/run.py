#!/usr/bin/env python
"""Run zarr-python's own test suite with ``sparsezarr.Pipeline`` as the default codec pipeline.

The test suite is taken from the sdist of the *installed* zarr version (downloaded once into
``.zarr-suite/`` at the repository root), and run with ``ZARR_CODEC_PIPELINE__PATH`` pointing at
our pipeline: zarr's conftest resets its configuration around every test, which re-reads the
environment, so every array in every test uses sparsezarr.

Tests that are known not to pass are listed in ``known_failures-<zarr major>.<minor>.txt`` beside
this script, one node id per line with a one-line reason. They still run, as strict expected failures: if one starts to
pass, the run fails until it is removed from the list. The list is meant to shrink to zero.

Usage: ``python tests/zarr_suite/run.py [extra pytest arguments]``

``python tests/zarr_suite/run.py --referee [extra pytest arguments]`` runs zarr's stateful
hypothesis tests instead (``--run-slow-hypothesis``: the hierarchy and store state machines, and on
zarr >= 3.4 the array-lifecycle machine), with zarr's own pipeline as the default and ours only on
the store under test, so that the hierarchy machine's model arrays are computed by zarr's
``BatchedCodecPipeline``. ``SPARSEZARR_REFEREE_EXAMPLES`` sets hypothesis's ``max_examples``
(default 300, zarr's own setting).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sdist import suite_dir  # noqa: E402


def known_failures() -> Path:
    """The list of known failures for the installed zarr's minor version
    (``known_failures-<major>.<minor>.txt``); every supported minor version has one."""
    import zarr

    major, minor = zarr.__version__.split(".")[:2]
    path = HERE / f"known_failures-{major}.{minor}.txt"
    if not path.exists():
        raise SystemExit(f"{path.name} is missing: run the suite, review its failures against zarr's default pipeline, and list them")
    return path


def main() -> int:
    target = suite_dir()
    args = sys.argv[1:]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if "--referee" in args:
        args.remove("--referee")
        env.pop("ZARR_CODEC_PIPELINE__PATH", None)
        env["SPARSEZARR_REFEREE"] = "1"
        selection = [
            str(p.relative_to(target))
            for p in (target / "tests" / "test_store" / "test_stateful.py", target / "tests" / "test_array_stateful.py")
            if p.exists()
        ]
        selection += ["--run-slow-hypothesis", "--hypothesis-profile=sparsezarr-referee"]
    else:
        env["ZARR_CODEC_PIPELINE__PATH"] = "sparsezarr.Pipeline"
        env["SPARSEZARR_KNOWN_FAILURES"] = str(known_failures())
        selection = ["tests"]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *selection,
        "-p",
        "sparsezarr_suite_plugin",
        "-p",
        "no:cacheprovider",
        # pytest-accept (zarr's test group; only rewrites doctest outputs with --accept) imports
        # astor, whose import warns on Python >= 3.12 and zarr's filterwarnings=error turns that
        # into a failed plugin load. Not loading it changes no test.
        "-p",
        "no:accept",
        "--ignore=tests/benchmarks",
        "-q",
        "-o",
        "addopts=",
        "-ra",
        "--timeout=600",
        *args,
    ]
    return subprocess.run(cmd, cwd=target, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
