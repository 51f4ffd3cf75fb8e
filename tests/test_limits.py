"""Hostile metadata and documents: refused with a clear exception, in bounded memory.

Each case runs in a child process whose address space is capped (``RLIMIT_AS``): an allocation
that the metadata implies but memory cannot hold must come back as an exception (``MemoryError``,
``MetadataError``, ...), never abort the process, and nothing may allocate what a header claims.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import numpy as np, zarr, sparsezarr
    from sparsezarr import _lib

    def dense_meta(shape=(4096,), shard=(1024,), inner=(256,)):
        return {
            "zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": "int32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shard)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": list(inner),
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end"}}],
        }

    def real_shard():
        # a real shard (index and chunks) written by zarr's own pipeline
        store = zarr.storage.MemoryStore()
        a = zarr.create_array(store, shape=(4096,), shards=(1024,), chunks=(256,), dtype="int32")
        a[:] = np.arange(4096, dtype="int32")
        return store._store_dict["c/0"].to_bytes()
    """
)

CASES = {
    "shape whose element count overflows 64 bits": (
        """
        _lib.read_array(_lib.Store.memory(), json.dumps(dense_meta(shape=(2**40, 2**40), shard=(2, 2), inner=(1, 1))), "", threads=1)
        """,
        "MetadataError",
    ),
    "array larger than memory": (
        """
        _lib.read_array(_lib.Store.memory(), json.dumps(dense_meta(shape=(2**63,))), "", threads=1)
        """,
        "MemoryError",
    ),
    "inner chunk of 2^40 elements against a real shard": (
        """
        store = _lib.Store.memory()
        store.set("c/0", real_shard())
        _lib.read_array(store, json.dumps(dense_meta(shape=(4096,), shard=(2**41,), inner=(2**40,))), "", threads=1)
        """,
        "Error",
    ),
    "rank 40": (
        """
        m = dense_meta(shape=(2,) * 40, shard=(2,) * 40, inner=(1,) * 40)
        sparsezarr.open_sparse  # the core refuses the rank for every array kind
        from sparsezarr import _lib as L
        L.read_array(L.Store.memory(), json.dumps(m), "", threads=1)
        """,
        "MetadataError",
    ),
    "JSON nested 100,000 deep": (
        """
        _lib.read_array(_lib.Store.memory(), '{"shape": ' + "[" * 100000 + "]" * 100000 + "}", "", threads=1)
        """,
        "MetadataError",
    ),
    "pipeline: chunk of 2^61 elements with a stored value": (
        """
        zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})
        store = zarr.storage.MemoryStore()
        a = zarr.create_array(store, shape=(2**61,), chunks=(2**61,), dtype="int32", compressors=None, fill_value=0)
        store._store_dict["c/0"] = zarr.core.buffer.cpu.Buffer.from_bytes(b"x" * 64)
        a[:4]
        """,
        "Error",
    ),
    "sparse chunk header claiming more entries than the chunk has elements": (
        """
        import scipy.sparse as sp
        store = zarr.storage.MemoryStore()
        s = sparsezarr.from_scipy(sp.eye(64, format="csr", dtype="float32"), store, chunks=(16, 16), shards=None)
        raw = bytearray(store._store_dict["c/0/0"].to_bytes())
        for i in range(0, min(len(raw) - 8, 64)):
            raw2 = bytearray(raw)
            raw2[i:i + 8] = (2**62).to_bytes(8, "little")
            store._store_dict["c/0/0"] = zarr.core.buffer.cpu.Buffer.from_bytes(bytes(raw2))
            try:
                sparsezarr.open_sparse(store)[0:16, 0:16]
            except Exception as e:
                pass
        raise ValueError("done: every corrupted header was read or refused without aborting")
        """,
        "ValueError: done",
    ),
    "gzip stream inflating far past its chunk": (
        """
        import resource, zlib
        zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})
        store = zarr.storage.MemoryStore()
        a = zarr.create_array(store, shape=(4096,), chunks=(1024,), dtype="int32", compressors=zarr.codecs.GzipCodec(level=1), fill_value=0)
        a[:] = 1
        gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # a gzip member holding 1 GiB of zeros, ~1 MB
        block = bytes(1 << 20)
        bomb = b"".join(gz.compress(block) for _ in range(1024)) + gz.flush()
        store._store_dict["c/0"] = zarr.core.buffer.cpu.Buffer.from_bytes(bomb)
        # Room for what the array implies (16 KiB), not for what the stream inflates to.
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), used + (512 << 20)))
        a[:]
        """,
        "CorruptChunkError",
    ),
    "virtual document nested 1,000 deep": (
        """
        leaf = {"kind": "array", "path": "a"}
        node = leaf
        for _ in range(1000):
            node = {"kind": "concat", "axis": 0, "components": [node]}
        doc = {"virtual_array_format": 1, "shape": [4], "data_type": "int32", "source": node}
        sparsezarr.VirtualArray(doc, zarr.storage.MemoryStore())
        """,
        "Error",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_in_bounded_memory(name):
    code, expected = CASES[name]
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    # a clean Python exception: exit status 1 with a traceback, not a signal (abort, OOM kill)
    assert r.returncode == 1, f"status {r.returncode}: {r.stderr[-2000:]}"
    last = r.stderr.strip().splitlines()[-1]
    assert expected in last, r.stderr[-2000:]
    assert "panicked" not in r.stderr and "memory allocation of" not in r.stderr
