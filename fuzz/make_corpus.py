"""Write the seed corpora of the fuzz targets (checked in under corpus/): values and documents of
real arrays written by zarr-python and sparsezarr, and the JSON examples of docs/spec.

    python fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

import sparsezarr

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"

#: In the order of chunk_decode.rs's METADATA.
DENSE = {
    "sharded_zstd": {"chunks": (256,), "shards": (1024,), "compressors": [ZstdCodec(level=1)]},
    "sharded_blosc": {"chunks": (256,), "shards": (1024,), "compressors": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]},
    "plain_zstd": {"chunks": (1024,), "compressors": [ZstdCodec(level=1, checksum=True)]},
    "plain_gzip_crc": {"chunks": (1024,), "compressors": [GzipCodec(level=1), Crc32cCodec()]},
    "plain_blosc": {"chunks": (1024,), "compressors": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")]},
}


def seed(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        values = {
            "counts": rng.poisson(2, 4096).astype("int32"),
            "zeros": np.zeros(4096, "int32"),
            "ramp": np.arange(4096, dtype="int32"),
            "sparse": np.where(rng.random(4096) < 0.95, 0, rng.integers(1, 1000, 4096)).astype("int32"),
        }
        for i, (name, kw) in enumerate(DENSE.items()):
            for pipeline in ("zarr.core.codec_pipeline.BatchedCodecPipeline", "sparsezarr.Pipeline"):
                for vname, v in values.items():
                    path = root / f"{name}-{pipeline.split('.')[0]}-{vname}"
                    with zarr.config.set({"codec_pipeline.path": pipeline}):
                        a = zarr.create_array(str(path), shape=(4096,), dtype="int32", fill_value=0, **kw)
                        a[:] = v
                        if vname == "counts":
                            a[100:200] = -1  # a partial write: a shard with holes rewritten
                    chunk = path / "c" / "0"
                    if chunk.exists():
                        b = chunk.read_bytes()
                        seed("chunk_decode", bytes([i]) + b)
                        seed("chunk_decode", bytes([i | 0x80]) + b[: len(b) // 2])
                    seed("metadata_json", (path / "zarr.json").read_bytes())
            v2 = root / f"{name}-v2"
            zarr.create_array(str(v2), shape=(4096,), dtype="int32", chunks=(1024,), zarr_format=2)[:] = values["counts"]
            seed("metadata_json", (v2 / ".zarray").read_bytes())
        m = sp.random(64, 64, density=0.1, format="csr", dtype=np.float32, random_state=0)
        for i, shards in enumerate([(32, 32), None]):
            for layout in ("coo", "csr"):
                path = root / f"sparse-{i}-{layout}"
                try:
                    sparsezarr.from_scipy(m, str(path), chunks=(16, 16), shards=shards, layout=layout)
                except TypeError:
                    sparsezarr.from_scipy(m, str(path), chunks=(16, 16), shards=shards)
                seed("sparse_decode", bytes([i]) + (path / "c" / "0" / "0").read_bytes())
                seed("metadata_json", (path / "zarr.json").read_bytes())
        # virtual documents: views written by sparsezarr, and the spec's examples
        zarr.create_array(str(root / "v" / "a"), shape=(10, 4), dtype="float32", chunks=(5, 4))[:] = 1
        zarr.create_array(str(root / "v" / "b"), shape=(6, 4), dtype="float32", chunks=(3, 4))[:] = 2
        a, b = zarr.open_array(str(root / "v" / "a")), zarr.open_array(str(root / "v" / "b"))
        for view in (sparsezarr.concat([a, b]), sparsezarr.stack([a, a]), sparsezarr.concat([a, b])[2:12, 1:3]):
            seed("virtual_json", view.to_json().encode())
    for spec in (HERE.parent / "docs" / "spec").glob("*.md"):
        for block in re.findall(r"```json\n(.*?)```", spec.read_text(), flags=re.S):
            target = "virtual_json" if "virtual" in spec.name else "metadata_json"
            try:
                json.loads(block)
            except ValueError:
                continue
            seed(target, block.encode())
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())))


if __name__ == "__main__":
    main()
