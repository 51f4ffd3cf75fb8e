"""Short runs of the reliability campaigns (tests/campaigns/kill.py; the full runs and their figures
are in docs/reliability.md), and the commit journal's recovery without strace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

import sparsezarr
from sparsezarr import _commit

sys.path.insert(0, str(Path(__file__).parent / "campaigns"))
import kill

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _strace() -> None:
    if shutil.which("strace") is None:
        pytest.fail("strace is needed by the kill and fault campaigns (Debian: apt-get install strace)")


# Every write path with a sample of its kill points (convert, ~290 points of ~1.5 s, more
# sparsely); ENOSPC and EIO on the paths with commits.
SMOKE = [(name, "kill", 12 if name == "convert_overwrite" else 3) for name in kill.SCENARIOS] + [
    (name, mode, 6) for name in ("append_rows", "write_csr", "sparse_region", "dense_partial_shards") for mode in ("enospc", "eio")
]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    _strace()
    root = tmp_path_factory.mktemp("kill")
    z = kill.Zygote(root)
    yield z, root
    z.close()


@pytest.mark.parametrize("name, mode, stride", SMOKE, ids=[f"{n}-{m}" for n, m, _ in SMOKE])
def test_campaign(zygote, name, mode, stride):
    """After a kill (or an injected ENOSPC/EIO) at sampled system calls of the write: the store
    opens, every unit holds its old or its new value, the next write succeeds; an injected error
    is raised, never swallowed."""
    z, root = zygote
    rep = kill.campaign(z, name, mode, root, stride=stride, log=lambda _: None)
    assert rep.points > 0
    assert rep.corrupt == []
    assert rep.silent == []
    assert rep.leftovers == 0
    # at least one injection landed before the write completed and was survived
    assert rep.points > rep.completed


def test_campaign_detects_a_torn_write(zygote):
    """The campaign can fail: a writer that updates the shape before indptr, without a commit
    (the order appends used before the journal), is caught."""
    z, root = zygote
    rep = kill.campaign(z, "torn_control", "kill", root, log=lambda _: None)
    assert rep.corrupt, "a torn two-key write went unnoticed"


def _anndata_store(path: Path, n: int = 400) -> sp.csr_matrix:
    import anndata as ad

    kill._zarr_v3(ad)
    x = sp.random(n, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    ad.AnnData(X=x).write_zarr(path)
    return x


def test_append_failure_during_commit_restores_the_old_metadata(tmp_path, monkeypatch):
    """A put that fails while the new documents are written (a full disk): the old documents are
    put back, the journal removed, the error raised; the next append works."""
    x = _anndata_store(tmp_path / "a.zarr")
    extra = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=1)
    real = _commit._put
    calls = {"n": 0}

    def failing(store, key, doc):
        calls["n"] += 1
        if calls["n"] == 3:  # the journal, the root's document, then this one fails
            raise OSError(28, "No space left on device")
        real(store, key, doc)

    monkeypatch.setattr(_commit, "_put", failing)
    with pytest.raises(OSError, match="No space"):
        sparsezarr.append_rows(tmp_path / "a.zarr", extra, path="X")
    monkeypatch.setattr(_commit, "_put", real)
    assert not (tmp_path / "a.zarr" / "X" / _commit.PENDING).exists()
    for consolidated in (True, False):
        np.testing.assert_array_equal(kill._anndata_x(tmp_path, consolidated), x.toarray())
    sparsezarr.append_rows(tmp_path / "a.zarr", extra, path="X")
    np.testing.assert_array_equal(kill._anndata_x(tmp_path, True), sp.vstack([x, extra]).toarray())


_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, scipy.sparse as sp
    import sparsezarr
    from sparsezarr import _commit

    after = int(sys.argv[2])
    real = _commit._put
    n = {"puts": 0}

    def put(store, key, doc):
        real(store, key, doc)
        n["puts"] += 1
        if n["puts"] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    _commit._put = put
    extra = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=1)
    sparsezarr.append_rows(sys.argv[1], extra, path="X")
    """
)


@pytest.mark.parametrize("after", [1, 2, 3, 4, 5])
def test_append_killed_after_the_commit_point_is_completed_by_the_next_reader(tmp_path, after):
    """A writer killed after the journal (put 1) and some of the documents: anndata's consolidated
    reader sees the old or the new matrix; sparsezarr's reader completes the commit, after which
    every reader sees the new matrix and the journal is gone."""
    x = _anndata_store(tmp_path / "a.zarr")
    extra = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=1)
    new = sp.vstack([x, extra]).toarray()
    r = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path / "a.zarr"), str(after)], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    journal = tmp_path / "a.zarr" / "X" / _commit.PENDING
    assert journal.exists()
    seen = kill._anndata_x(tmp_path, True)
    assert np.array_equal(seen, x.toarray()) or np.array_equal(seen, new)
    got = sparsezarr.open_csr(str(tmp_path / "a.zarr"), path="X")[:].toarray()
    np.testing.assert_array_equal(got, new)
    assert not journal.exists()
    for consolidated in (True, False):
        np.testing.assert_array_equal(kill._anndata_x(tmp_path, consolidated), new)


def test_read_only_open_completes_a_commit(tmp_path):
    """A reader opening the store read-only still completes a crashed commit (the files are
    writable; the journal says exactly what to write)."""
    x = _anndata_store(tmp_path / "a.zarr")
    r = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path / "a.zarr"), "3"], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    store = zarr.storage.LocalStore(tmp_path / "a.zarr", read_only=True)
    got = sparsezarr.open_csr(store, path="X")
    assert got.shape == (x.shape[0] + 50, 30)
    assert not (tmp_path / "a.zarr" / "X" / _commit.PENDING).exists()


def test_journal_holds_old_and_new_documents(tmp_path):
    """The journal is a plain JSON document naming every key it changes, with both texts."""
    _anndata_store(tmp_path / "a.zarr")
    r = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path / "a.zarr"), "1"], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    doc = json.loads((tmp_path / "a.zarr" / "X" / _commit.PENDING).read_text())
    assert sorted(doc["new"]) == sorted(["zarr.json", "X/zarr.json", "X/data/zarr.json", "X/indices/zarr.json", "X/indptr/zarr.json"])
    assert doc["new"]["X/zarr.json"]["attributes"]["shape"] == [450, 30]
    assert doc["old"]["X/zarr.json"]["attributes"]["shape"] == [400, 30]


def _fsyncs(code: str, cwd: Path) -> int:
    """fsync + fdatasync calls made by ``code`` in a fresh interpreter."""
    _strace()
    out = cwd / "strace.txt"
    subprocess.run(["strace", "-f", "-qq", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync", sys.executable, "-c", code], check=True, cwd=cwd)
    total = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync") and parts[3].isdigit():
            total += int(parts[3])
    return total


@pytest.mark.parametrize("durable", [False, True])
def test_durable_setting_flushes_every_value(tmp_path, durable):
    """``codec_pipeline.durable``: each value written through the pipeline is flushed with its
    directory (off: none is)."""
    code = textwrap.dedent(
        f"""
        import numpy as np, zarr
        zarr.config.set({{"codec_pipeline.path": "sparsezarr.Pipeline", "codec_pipeline.durable": {durable}}})
        a = zarr.create_array("a", shape=(64, 64), chunks=(16, 16), dtype="int32")
        a[:] = np.arange(64 * 64, dtype="int32").reshape(64, 64)
        assert (zarr.open_array("a")[:] == np.arange(64 * 64).reshape(64, 64)).all()
        """
    )
    n = _fsyncs(code, tmp_path)
    if durable:
        assert n >= 2 * 16  # 16 chunks: the value, then its directory
    else:
        assert n == 0


def test_durable_csr_write_flushes_the_whole_group(tmp_path):
    """A CSR group written with the setting on: its zarr-python metadata documents are flushed
    too (files and directories of the group)."""
    code = textwrap.dedent(
        """
        import numpy as np, scipy.sparse as sp, zarr, sparsezarr
        zarr.config.set({"codec_pipeline.durable": True})
        x = sp.random(300, 40, density=0.1, format="csr", dtype=np.float32, random_state=0)
        sparsezarr.write_csr("g.zarr", x)
        sparsezarr.write_csr("g.zarr", x * 2, overwrite=True)
        assert (sparsezarr.open_csr("g.zarr")[:].toarray() == (x * 2).toarray()).all()
        """
    )
    files = 0
    n = _fsyncs(code, tmp_path)
    for _, dirs, names in os.walk(tmp_path / "g.zarr"):
        files += len(names) + len(dirs)
    assert n >= files


def test_v3_group_is_refused_in_a_v2_hierarchy(tmp_path):
    """Writing a v3 CSR group below the root of a zarr v2 store (anndata < 0.13's default) would
    add a v3 root document that hides every other member: refused, and the store still reads."""
    store = zarr.storage.LocalStore(tmp_path / "v2.zarr")
    root = zarr.open_group(store, mode="w", zarr_format=2)
    root.create_array("obs_names", shape=(3,), dtype="int32")[:] = [1, 2, 3]
    x = sp.random(3, 4, density=0.5, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(ValueError, match="zarr v2 hierarchy"):
        sparsezarr.write_csr(tmp_path / "v2.zarr", x, path="X")
    with pytest.raises(ValueError, match="zarr v2 hierarchy"):
        sparsezarr.CsrWriter(tmp_path / "v2.zarr", n_cols=4, path="X")
    assert not (tmp_path / "v2.zarr" / "zarr.json").exists()
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "v2.zarr", mode="r")["obs_names"][:], [1, 2, 3])
    sparsezarr.write_csr(tmp_path / "own.zarr", x)  # a store of its own is fine
