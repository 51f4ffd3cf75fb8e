"""``sparsezarr bench``: the installed quick pipeline comparison (the README's main job)."""

from __future__ import annotations

import numpy as np
import pytest

from sparsezarr import bench
from sparsezarr.cli import main


def test_bench_runs_every_pipeline_and_case(tmp_path):
    results = bench.run("field", size=1024, rounds=1, pipelines=["zarr", "sparsezarr"], workdir=tmp_path, progress=False)
    cases = {(r.case, r.pipeline) for r in results}
    want = {(f"full {op} ({layout})", p) for op in ("write", "read") for layout in bench.LAYOUTS for p in ("zarr", "sparsezarr")}
    assert cases == want
    assert all(r.seconds > 0 and r.nbytes == 1024 * 1024 * 4 for r in results)
    # Nothing is left behind in the work directory.
    assert list(tmp_path.iterdir()) == []
    table = bench.render(results)
    assert table.splitlines()[0] == "| case | zarr | sparsezarr | codec bound | sparsezarr vs zarr |"
    assert len(table.splitlines()) == 2 + len(bench.LAYOUTS) * 2
    # The codec bound is measured in the same run (a positive time) and each result's fraction of
    # it is the bound over its best time. How close a pipeline gets is a benchmark's question, not
    # a test's: a 4 MiB array timed once is too noisy to assert on (it failed once, under load).
    assert all(r.bound is not None and r.bound > 0 and r.median is not None and r.median >= r.seconds for r in results)
    assert all(r.of_bound == pytest.approx(r.bound / r.seconds) for r in results)


def test_bench_naive_state_runs_each_call_in_a_fresh_process(tmp_path):
    results = bench.run("smooth", size=1024, rounds=1, pipelines=["zarr", "sparsezarr"], workdir=tmp_path, progress=False, states=("naive",))
    assert {r.case for r in results} == {f"full {op} ({layout}), naive" for op in ("write", "read") for layout in bench.LAYOUTS}
    assert all(r.seconds > 0 and r.bound is not None for r in results)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="states"):
        bench.run("smooth", size=1024, rounds=1, pipelines=["zarr"], workdir=tmp_path, progress=False, states=("fast",))


def test_bench_data_kinds():
    field, smooth, rnd = (bench.make_data(k, 1024) for k in bench.DATASETS)
    assert field.dtype == smooth.dtype == rnd.dtype == np.float32
    # field = smooth structure + noise, rounded to 0.01
    assert np.abs(field - smooth).mean() == pytest.approx(0.8, abs=0.1)
    assert np.allclose(field * 100, np.round(field * 100), atol=1e-2)
    assert rnd.min() >= 0.0 and rnd.max() < 1.0


def test_bench_cli_output(tmp_path, capsys):
    assert main(["bench", "--size", "1024", "--rounds", "1", "--dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1024 x 1024 float32 (field data)" in out
    for layout in bench.LAYOUTS:
        assert f"| full write ({layout}) |" in out and f"| full read ({layout}) |" in out


@pytest.mark.parametrize(
    "args,message",
    [(["--size", "1000"], "multiple of 1024"), (["--rounds", "0"], "at least 1")],
)
def test_bench_cli_bad_arguments(args, message, tmp_path, capsys):
    assert main(["bench", "--dir", str(tmp_path), "-q", *args]) == 2
    assert message in capsys.readouterr().err


def test_bench_unknown_pipeline():
    with pytest.raises(ValueError, match="unknown pipelines"):
        bench.run(pipelines=["nope"], size=1024, progress=False)


def test_bench_deletes_rounds_when_disk_is_short(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    removed: list[str] = []
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(bench.shutil, "disk_usage", lambda path: usage(1, 1, 0))
    monkeypatch.setattr(bench.shutil, "rmtree", lambda p, **kw: (removed.append(str(p)), real_rmtree(p, **kw))[1])
    results = bench.run("random", size=1024, rounds=2, pipelines=["sparsezarr"], workdir=tmp_path, progress=False)
    assert len(results) == 2 * len(bench.LAYOUTS)
    # every write round's output was removed as soon as it was measured, then the work directory
    written = [p for p in removed if "/w-" in p]
    assert len(written) == 2 * len(bench.LAYOUTS)
    assert list(tmp_path.iterdir()) == []
