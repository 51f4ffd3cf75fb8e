"""Kill and fault campaigns: every write path, run in a child process that strace kills (or fails)
at its N-th write / rename / unlink / link system call, for every N until the write completes.

After each kill or injected failure the store must open, every unit of it (a shard, a chunk, the
whole matrix) must hold its complete old or complete new value, through sparsezarr and through an
independent reader (zarr's own pipeline, anndata), and the next write must succeed and give the
new value. An injected ``ENOSPC``/``EIO`` must also surface as an exception in the child (a write
that "succeeds" without its data is a silent success, counted as a failure).

    python tests/campaigns/kill.py                       # every path, every kill point
    python tests/campaigns/kill.py --paths append_rows --mode kill,enospc,eio
    python tests/campaigns/kill.py --stride 7 --json out.json   # a sample of the points (CI)

Needs ``strace`` (Debian package ``strace``) with ``-e inject``. The child runs with one writer
thread (``threading.max_workers=1``) so that kill points are deterministic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: System calls at which a writer is killed or failed, one campaign per call.
SYSCALLS = ("write", "pwrite64", "writev", "pwritev", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "link", "linkat")

#: What each mode injects.
MODES = {"kill": "signal=KILL", "enospc": "error=ENOSPC", "eio": "error=EIO"}

OURS = "sparsezarr.Pipeline"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _csr(seed: int, rows: int, cols: int = 50, density: float = 0.1) -> Any:
    import scipy.sparse as sp

    m = sp.random(rows, cols, density=density, format="csr", dtype=np.float32, random_state=seed)
    m.data = np.round(m.data * 100).astype(np.float32) + 1
    return m


def _dense_units(a: Any, grid: tuple[int, int]) -> list[np.ndarray]:
    """The array read with zarr's own pipeline, cut into ``grid`` blocks."""
    whole = a[...]
    return [whole[i : i + grid[0], j : j + grid[1]] for i in range(0, whole.shape[0], grid[0]) for j in range(0, whole.shape[1], grid[1])]


def _zarr_default(fn: Callable[[], Any]) -> Any:
    import zarr

    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        return fn()


def _ours(fn: Callable[[], Any]) -> Any:
    import zarr

    with zarr.config.set({"codec_pipeline.path": OURS}):
        return fn()


@dataclass
class Scenario:
    """One write path: ``prepare`` builds the old store in a directory, ``act`` is the write (run
    in the child), ``units`` reads the state as comparable pieces (each must be old or new)."""

    name: str
    prepare: Callable[[Path], None]
    act: Callable[[Path], None]
    units: Callable[[Path], list[Any]]
    doc: str = ""
    #: False for writes that change the store again when repeated (appends): after a kill that
    #: left the new value, the next write must give the value of two writes.
    idempotent: bool = True
    #: A reader that does not use sparsezarr, run on the store as the kill left it (before
    #: sparsezarr opens it and completes an interrupted commit); None where ``units`` already is one.
    foreign: Callable[[Path], list[Any]] | None = None


def _dense(shards: bool) -> tuple[Callable[[Path], None], Callable[[Path], list[Any]]]:
    def prepare(d: Path) -> None:
        import zarr

        _ours(
            lambda: zarr.create_array(
                store=str(d / "a"), shape=(128, 128), dtype="int32", chunks=(16, 16), shards=(64, 64) if shards else None, fill_value=0
            ).__setitem__(Ellipsis, np.arange(128 * 128, dtype=np.int32).reshape(128, 128))
        )

    def units(d: Path) -> list[Any]:
        import zarr

        grid = (64, 64) if shards else (16, 16)
        theirs = _zarr_default(lambda: _dense_units(zarr.open_array(str(d / "a"), mode="r"), grid))
        mine = _ours(lambda: _dense_units(zarr.open_array(str(d / "a"), mode="r"), grid))
        for x, y in zip(theirs, mine, strict=True):
            if not np.array_equal(x, y):
                raise AssertionError("sparsezarr.Pipeline and zarr's pipeline read different values")
        return theirs

    return prepare, units


def _dense_full(d: Path) -> None:
    import zarr

    _ours(lambda: zarr.open_array(str(d / "a"), mode="r+").__setitem__(Ellipsis, -np.arange(128 * 128, dtype=np.int32).reshape(128, 128)))


def _dense_partial(d: Path) -> None:
    import zarr

    def go() -> None:
        a = zarr.open_array(str(d / "a"), mode="r+")
        a[0:16, 16:32] = -1  # one inner chunk of shard (0, 0)
        a[70:80, 70:100] = -2  # parts of three inner chunks of shard (1, 1)
        a[120:128, 0:128] = -3  # the last rows of the bottom shards

    _ours(go)


def _sparse_prepare(d: Path) -> None:
    import sparsezarr

    sparsezarr.from_scipy(_csr(1, 256, 256, 0.05), str(d / "s"), chunks=(32, 32), shards=(128, 128))


def _sparse_act(d: Path) -> None:
    import sparsezarr

    s = sparsezarr.open_sparse(str(d / "s"), mode="r+")
    s[0:100, 50:200] = _csr(2, 100, 150, 0.2)
    s[200:256, 0:256] = _csr(3, 56, 256, 0.1)


def _sparse_units(d: Path) -> list[Any]:
    import sparsezarr

    s = sparsezarr.open_sparse(str(d / "s"), mode="r")
    whole = s[...].todense()
    return [whole[i : i + 128, j : j + 128] for i in (0, 128) for j in (0, 128)]


def _zarr_v3(ad: Any) -> None:
    """anndata < 0.13 writes zarr v2 by default; the campaigns' stores are zarr v3 (appends need
    it), as anndata 0.13 writes them."""
    if hasattr(ad.settings, "zarr_write_format"):
        ad.settings.zarr_write_format = 3


def _anndata_prepare(d: Path) -> None:
    import anndata as ad
    import pandas as pd

    _zarr_v3(ad)

    x = _csr(10, 1000)
    ad.AnnData(X=x, obs=pd.DataFrame(index=[f"c{i}" for i in range(1000)])).write_zarr(d / "a.zarr")


def _anndata_x(d: Path, consolidated: bool) -> np.ndarray:
    """X as anndata reads it (with the root's consolidated metadata, as ``read_zarr`` does, or
    from each node's own document)."""
    import zarr

    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem

    x = read_elem(zarr.open_group(str(d / "a.zarr"), mode="r", use_consolidated=None if consolidated else False)["X"])
    x.check_format(full_check=True)
    return np.asarray(x.toarray())


def _x_units(d: Path) -> list[Any]:
    """X read by sparsezarr (which completes a commit a killed writer left), then by anndata
    with and without the consolidated metadata: all three must agree."""
    import sparsezarr

    mine = sparsezarr.open_csr(str(d / "a.zarr"), path="X")[:].toarray()
    for consolidated in (True, False):
        if not np.array_equal(mine, _anndata_x(d, consolidated)):
            raise AssertionError(f"anndata ({'consolidated' if consolidated else 'plain'} metadata) and sparsezarr read different matrices")
    return [mine]


def _x_foreign(d: Path) -> list[Any]:
    return [_anndata_x(d, True)]


def _append(d: Path) -> None:
    import sparsezarr

    sparsezarr.append_rows(str(d / "a.zarr"), [_csr(11, 200), _csr(12, 100)], path="X")


def _write_csr(d: Path) -> None:
    import sparsezarr

    sparsezarr.write_csr(str(d / "a.zarr"), _csr(13, 700), path="X", overwrite=True, chunks=256, shards=1024)


def _csr_writer(d: Path) -> None:
    import sparsezarr

    with sparsezarr.CsrWriter(str(d / "a.zarr"), n_cols=50, path="X", overwrite=True, chunks=256, shards=1024) as w:
        for i in range(4):
            w.append(_csr(20 + i, 300))


def _convert_prepare(d: Path) -> None:
    import anndata as ad

    import sparsezarr

    for name, seed in (("old", 30), ("new", 31)):
        ad.AnnData(X=_csr(seed, 600)).write_h5ad(d / f"{name}.h5ad")
    sparsezarr.convert(d / "old.h5ad", d / "a.zarr")


def _convert(d: Path) -> None:
    from sparsezarr.cli import main

    if main(["convert", str(d / "new.h5ad"), str(d / "a.zarr"), "--overwrite"]) != 0:
        raise SystemExit(1)


def _virtual_prepare(d: Path) -> None:
    import sparsezarr

    _anndata_prepare(d)
    sparsezarr.write_csr(str(d / "p1.zarr"), _csr(40, 300))
    sparsezarr.write_csr(str(d / "p2.zarr"), _csr(41, 500))


def _materialize(d: Path) -> None:
    import sparsezarr

    v = sparsezarr.concat([sparsezarr.open_csr(str(d / "p1.zarr")), sparsezarr.open_csr(str(d / "p2.zarr"))])
    v.materialize(str(d / "a.zarr"), "X", overwrite=True)


def _dense_virtual_prepare(d: Path) -> None:
    import zarr

    _dense(True)[0](d)
    for name, k in (("p1", 1), ("p2", 2)):
        _ours(lambda name=name, k=k: zarr.create_array(store=str(d / name), shape=(64, 128), dtype="int32", chunks=(16, 16)).__setitem__(Ellipsis, k))


def _dense_materialize(d: Path) -> None:
    import zarr

    import sparsezarr

    v = sparsezarr.concat([zarr.open_array(str(d / "p1")), zarr.open_array(str(d / "p2"))])
    v.materialize(str(d / "a"), overwrite=True, chunks=(16, 16), shards=(64, 64))


def _consolidate(d: Path) -> None:
    import zarr

    from sparsezarr._stores import reconsolidate, rust_store

    g = zarr.open_group(str(d / "a.zarr"), mode="r+", use_consolidated=False)
    doc = json.loads((d / "a.zarr" / "obs" / "zarr.json").read_text())
    doc["attributes"]["note"] = "changed"
    rust_store(g.store).set("obs/zarr.json", json.dumps(doc).encode())
    reconsolidate(g.store)


def _consolidated_units(d: Path) -> list[Any]:
    import zarr

    g = zarr.open_group(str(d / "a.zarr"), mode="r")
    return [json.dumps(dict(g["obs"].attrs), sort_keys=True), *_x_units(d)]


_dense_sharded = _dense(True)
_dense_plain = _dense(False)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("dense_full_shards", _dense_sharded[0], _dense_full, _dense_sharded[1], "a[:] = ... over 4 shards (sparsezarr.Pipeline)"),
        Scenario("dense_partial_shards", _dense_sharded[0], _dense_partial, _dense_sharded[1], "partial writes into shards (read-modify-write)"),
        Scenario("dense_unsharded", _dense_plain[0], _dense_full, _dense_plain[1], "a[:] = ... over 64 plain chunks"),
        Scenario("sparse_region", _sparse_prepare, _sparse_act, _sparse_units, "sparse array region writes (partial shards)"),
        Scenario("write_csr", _anndata_prepare, _write_csr, _x_units, "write_csr(overwrite=True) of X in an anndata store", foreign=_x_foreign),
        Scenario("csr_writer", _anndata_prepare, _csr_writer, _x_units, "CsrWriter over X, overwrite=True", foreign=_x_foreign),
        Scenario("append_rows", _anndata_prepare, _append, _x_units, "append_rows to X of an anndata store", idempotent=False, foreign=_x_foreign),
        Scenario("convert_overwrite", _convert_prepare, _convert, _x_units, "sparsezarr convert new.h5ad a.zarr --overwrite", foreign=_x_foreign),
        Scenario("materialize_csr", _virtual_prepare, _materialize, _x_units, "VirtualArray.materialize of a CSR concat over X", foreign=_x_foreign),
        Scenario(
            "materialize_dense", _dense_virtual_prepare, _dense_materialize, _dense_sharded[1], "VirtualArray.materialize(overwrite=True), dense"
        ),
        Scenario("reconsolidate", _anndata_prepare, _consolidate, _consolidated_units, "group attributes changed, metadata re-consolidated"),
    ]
}


def _torn(d: Path) -> None:
    """A negative control: a two-key change without a commit (the group's shape, then indptr's
    length), the way appends were made before the journal. The campaign must find it."""
    import scipy.sparse as sp
    import zarr

    g = zarr.open_group(str(d / "a.zarr"), mode="r+", use_consolidated=False)
    data, indices, indptr = g["X/data"], g["X/indices"], g["X/indptr"]
    n, nnz = indptr.shape[0] - 1, data.shape[0]
    old = sp.csr_matrix((data[:], indices[:], indptr[:]), shape=(n, 50))
    new = sp.vstack([old, _csr(11, 300)]).tocsr()
    for a, v in ((data, new.data), (indices, new.indices)):
        a.resize((new.nnz,))
        a[nnz:] = v[nnz:]
    indptr.resize((len(new.indptr),))
    indptr[:] = new.indptr
    g["X"].attrs["shape"] = list(new.shape)
    zarr.consolidate_metadata(g.store)


#: Writers that must fail the campaign (to show that it can fail); not run by default.
CONTROLS: dict[str, Scenario] = {
    s.name: s for s in [Scenario("torn_control", _anndata_prepare, _torn, _x_units, "shape then indptr, no commit", idempotent=False)]
}
ALL = {**SCENARIOS, **CONTROLS}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    return bool(a == b)


@dataclass
class Report:
    """What one campaign found for one path."""

    path: str
    mode: str
    points: int = 0  # injections tried
    completed: int = 0  # runs whose write finished before the injection point
    old: int = 0  # units found holding their old value after an injection
    new: int = 0
    corrupt: list[str] = field(default_factory=list)  # what went wrong, per failed point
    silent: list[str] = field(default_factory=list)  # an injected error that the write did not report
    leftovers: int = 0  # visible temporary files or directories of sparsezarr left after an injection
    zarr_leftovers: int = 0  # visible temporary files of zarr-python's own metadata writes
    #: injections after which a reader that does not use sparsezarr (anndata with consolidated
    #: metadata) failed or read neither value, before sparsezarr opened the store
    foreign_window: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONDONTWRITEBYTECODE": "1",
            "ZARR_THREADING__MAX_WORKERS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH", "")) if p),
        }
    )
    return env


class Zygote:
    """A process that has imported everything once and forks a fresh writer per kill point (a
    Python start with zarr, anndata and sparsezarr costs seconds; a fork, milliseconds). The
    forked writer waits on a FIFO until strace has attached to it, so that every one of its calls
    is traced from the first."""

    def __init__(self, work_root: Path) -> None:
        self.fifo = work_root / "go.fifo"
        with contextlib.suppress(FileNotFoundError):
            self.fifo.unlink()
        os.mkfifo(self.fifo)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import kill; kill._zygote()"],
            env=_child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def run(self, name: str, d: Path, trace: list[str] | None = None) -> tuple[int, str]:
        """Run ``name``'s write on ``d`` (under strace with the options ``trace``). Returns the
        writer's exit code (or minus the signal that killed it) and the tail of its stderr."""
        err = d.parent / f"{d.name}.stderr"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"name": name, "dir": str(d), "fifo": str(self.fifo), "stderr": str(err)}) + "\n")
        pid = int(self.proc.stdout.readline())
        tracer = None
        if trace is not None:
            tracer = subprocess.Popen(
                ["strace", "-f", *trace, "-p", str(pid)],
                stderr=subprocess.PIPE,
                text=True,
            )
            assert tracer.stderr is not None
            line = tracer.stderr.readline()
            if "attached" not in line:
                raise RuntimeError(f"strace did not attach: {line}{tracer.stderr.read()}")
        with open(self.fifo, "w") as go:
            go.write("g")
        code = int(self.proc.stdout.readline())
        if tracer is not None:
            tracer.wait(timeout=60)
        tail = err.read_text()[-3000:] if err.exists() else ""
        with contextlib.suppress(FileNotFoundError):
            err.unlink()
        return code, tail


def _zygote() -> None:
    """The fork server's loop (see :class:`Zygote`): imports once, then one fork per request."""
    import anndata  # noqa: F401
    import scipy.sparse  # noqa: F401
    import zarr  # noqa: F401

    import sparsezarr
    import sparsezarr.cli  # noqa: F401

    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                fd = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)  # the writer's output must not reach the protocol on stdout
                os.dup2(fd, 2)
                with open(req["fifo"]) as go:
                    go.read(1)
                ALL[req["name"]].act(Path(req["dir"]))
            except BaseException:  # noqa: BLE001 - reported through the exit code
                code = 1  # first: printing may fail too (an injected error on stderr)
                import traceback

                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stderr.flush()
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


def count_calls(z: Zygote, name: str, template: Path, work: Path) -> dict[str, int]:
    """How many of each traced call the write makes (all threads together)."""
    _fresh(template, work)
    out = work.parent / f"{work.name}.strace"
    code, err = z.run(name, work, ["-c", "-o", str(out), "-e", f"trace={','.join(SYSCALLS)}"])
    if code != 0:
        raise RuntimeError(f"{name}: the write failed under strace:\n{err}")
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in SYSCALLS and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    out.unlink()
    return counts


def _fresh(template: Path, work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work)


#: zarr-python's LocalStore writes ``<name>.<uuid4 hex>.partial`` beside a key and renames it.
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _visible_leftovers(d: Path) -> tuple[int, int]:
    """Temporary files or staging directories that a reader listing the store would see: those
    of sparsezarr, and those of zarr-python's own metadata writes (group and array creation)."""
    ours = theirs = 0
    for p in d.rglob("*"):
        name = p.name
        hidden = any(part.startswith(".") for part in p.relative_to(d).parts)
        if hidden or not ("sparsezarr-new" in name or "sparsezarr-old" in name or name.endswith((".partial", ".tmp"))):
            continue
        if _ZARR_TEMP.search(name):
            theirs += 1
        else:
            ours += 1
        if os.environ.get("SPARSEZARR_KILL_SHOW_LEFTOVERS"):
            print("    leftover:", p.relative_to(d))
    return ours, theirs


def campaign(
    z: Zygote, name: str, mode: str, work_root: Path, stride: int = 1, limit: int | None = None, log: Callable[[str], None] = print
) -> Report:
    """Inject ``mode`` at every ``stride``-th call of each traced system call of ``name``'s write."""
    sc = ALL[name]
    rep = Report(name, mode)
    start = time.perf_counter()
    template, work = work_root / f"{name}.template", work_root / f"{name}.work"
    if template.exists():
        shutil.rmtree(template)
    template.mkdir(parents=True)
    sc.prepare(template)
    old = sc.units(template)
    _fresh(template, work)
    code, err = z.run(name, work)
    if code != 0:
        raise RuntimeError(f"{name}: the write failed without injection:\n{err}")
    new = sc.units(work)
    if all(_same(a, b) for a, b in zip(old, new, strict=True)):
        raise RuntimeError(f"{name}: the write changes nothing; the campaign could not tell old from new")
    twice = new
    if not sc.idempotent:
        code, err = z.run(name, work)
        if code != 0:
            raise RuntimeError(f"{name}: the second write failed:\n{err}")
        twice = sc.units(work)
    counts = count_calls(z, name, template, work)
    for call, total in sorted(counts.items()):
        points = list(range(1, total + 1, stride))
        if limit is not None:
            points = points[:limit]
        for n in points:
            _fresh(template, work)
            rep.points += 1
            code, err = z.run(name, work, ["-o", "/dev/null", "-e", f"trace={call}", "-e", f"inject={call}:{MODES[mode]}:when={n}"])
            where = f"{call} #{n}"
            if code == 0:
                rep.completed += 1
                if mode != "kill":
                    # The injected error was swallowed: the result must then be complete and new.
                    try:
                        got = sc.units(work)
                    except Exception as e:  # noqa: BLE001 - any failure to read is a finding
                        rep.silent.append(f"{where}: write reported success, store unreadable: {e}")
                        continue
                    if not all(_same(a, b) for a, b in zip(got, new, strict=True)):
                        rep.silent.append(f"{where}: write reported success without storing its values")
                continue
            if sc.foreign is not None:
                try:
                    seen = sc.foreign(work)
                    if not all(_same(g, a) or _same(g, b) for g, a, b in zip(seen, old, new, strict=True)):
                        rep.foreign_window.append(f"{where}: read neither value")
                except Exception as e:  # noqa: BLE001 - any failure to read is a finding
                    rep.foreign_window.append(f"{where}: {type(e).__name__}: {str(e)[:200]}")
            if mode != "kill" and code != 1:
                rep.corrupt.append(f"{where}: the writer died (status {code}) instead of raising")
            elif mode == "kill" and code != -9:
                rep.corrupt.append(f"{where}: the writer failed (status {code}) instead of being killed: {err[-300:]}")
            try:
                got = sc.units(work)
            except Exception as e:  # noqa: BLE001 - any failure to read is a finding
                rep.corrupt.append(f"{where}: store does not open/read after the injection: {type(e).__name__}: {str(e)[:300]}")
                log(f"  {name} {mode} {where}: CORRUPT (unreadable)")
                continue
            bad = [i for i, (g, a, b) in enumerate(zip(got, old, new, strict=True)) if not (_same(g, a) or _same(g, b))]
            rep.old += sum(_same(g, a) for g, a in zip(got, old, strict=True))
            rep.new += sum(_same(g, b) and not _same(g, a) for g, a, b in zip(got, old, new, strict=True))
            if bad:
                rep.corrupt.append(f"{where}: units {bad} hold neither the old nor the new value")
                log(f"  {name} {mode} {where}: CORRUPT (units {bad})")
                continue
            ours, theirs = _visible_leftovers(work)
            rep.leftovers += ours
            rep.zarr_leftovers += theirs
            was_new = all(_same(g, b) for g, b in zip(got, new, strict=True)) and not all(_same(g, a) for g, a in zip(got, old, strict=True))
            expect = twice if was_new else new
            # The next write must succeed and store the new value (two writes' value after an
            # append that the injection did not stop from committing).
            code, err = z.run(name, work)
            if code != 0:
                rep.corrupt.append(f"{where}: the next write failed: {err.strip()[-300:]}")
                log(f"  {name} {mode} {where}: next write FAILED")
                continue
            try:
                after = sc.units(work)
                ok = all(_same(a, b) for a, b in zip(after, expect, strict=True))
            except Exception:  # noqa: BLE001 - any failure to read is a finding
                ok = False
            if not ok:
                rep.corrupt.append(f"{where}: after the next write the store does not hold the new value")
                log(f"  {name} {mode} {where}: next write gave a wrong value")
    rep.seconds = time.perf_counter() - start
    shutil.rmtree(template, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return rep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paths", default=",".join(SCENARIOS), help="comma-separated write paths (default: all)")
    p.add_argument("--mode", default="kill", help="comma-separated: kill, enospc, eio")
    p.add_argument("--stride", type=int, default=1, help="try every STRIDE-th call (default: every one)")
    p.add_argument("--limit", type=int, default=None, help="at most LIMIT points per system call")
    p.add_argument("--json", default=None, help="write the reports here")
    args = p.parse_args(argv)
    if shutil.which("strace") is None:
        print("strace is not installed (Debian: apt-get install strace)", file=sys.stderr)
        return 2
    reports = []
    with tempfile.TemporaryDirectory(prefix="sparsezarr-kill-") as tmp:
        z = Zygote(Path(tmp))
        for mode in args.mode.split(","):
            for name in args.paths.split(","):
                rep = campaign(z, name, mode, Path(tmp), args.stride, args.limit)
                reports.append(rep)
                print(
                    f"{name:20s} {mode:6s} points {rep.points:4d}  completed {rep.completed:4d}  units old {rep.old:5d} new {rep.new:5d}  "
                    f"corrupt {len(rep.corrupt)}  silent {len(rep.silent)}  leftovers {rep.leftovers} (zarr-python's {rep.zarr_leftovers})  "
                    f"foreign-reader window {len(rep.foreign_window)}  {rep.seconds:6.1f} s",
                    flush=True,
                )
                for line in rep.corrupt[:5] + rep.silent[:5] + rep.foreign_window[:3]:
                    print("   ", line)
        z.close()
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in reports], indent=1))
    return 1 if any(r.corrupt or r.silent for r in reports) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
