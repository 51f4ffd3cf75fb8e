#!/usr/bin/env python
"""Run a benchmark suite with pytest-benchmark and print a markdown table with ratios.

Usage::

    python benches/report.py pipeline            # benches/test_bench_pipeline.py
    python benches/report.py pipeline --json out.json
    python benches/report.py singlecell -- -k test_read     # pytest arguments after --

Every benchmark records ``extra_info`` with a ``case``, the ``pipeline`` (or tool) it ran and the
``bytes`` it moved. Times are the best (minimum) round. For each case the table shows every tool's
time and throughput, and the ratio of sparsezarr's speed to each other tool's (>1 = sparsezarr is
faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = "sparsezarr"


def run(suite: str, json_path: Path, extra: list[str]) -> None:
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS threads would steal the 2 cores
    # glibc's malloc moves its mmap threshold up to the largest block freed so far, so whether a
    # tool's multi-megabyte buffers are fresh mmaps (a page fault per 4 KiB page, every call) or
    # reused heap memory depends on what ran before it in the process: the zarrs package's sharded
    # writes took 155 ms or 190 ms depending on test order. Fixed thresholds put every tool in the
    # steady state, whatever ran before it.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE / f"test_bench_{suite}.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        "--benchmark-disable-gc",
        *extra,
    ]
    subprocess.run(cmd, check=True, env=env)


def render(results: dict) -> str:
    rows: dict[str, dict[str, tuple[float, int, int]]] = defaultdict(dict)
    order: list[str] = []
    storage: list[dict] = []
    for b in results["benchmarks"]:
        info = b.get("extra_info", {})
        if "stored_bytes" in info:
            storage.append(info)
            continue
        case, tool = info.get("case", b["name"]), info.get("pipeline", "?")
        if "encode_secs" in info:  # a codec bound measured inside Rust
            prefix = case.split(": ")[0] + ": " if ": " in case else ""
            layout = case[case.index("(") :]
            for direction in ("encode", "decode"):
                name = f"{prefix}raw {direction} bound {layout}"
                if name not in rows:
                    order.append(name)
                rows[name][tool] = (info[f"{direction}_secs"], int(info.get("bytes", 0)), 0)
            continue
        if case not in rows:
            order.append(case)
        # "secs": a time measured by the benchmark itself (e.g. inside another process)
        secs = float(info["secs"]) if "secs" in info else b["stats"]["min"]
        rows[case][tool] = (secs, int(info.get("bytes", 0)), int(info.get("cells", 0)))
    tools = [
        t
        for t in ("zarr", "zarr-fused", "zarrs", "anndata+zarr", "anndata+zarrs", "dense+zarrs", "annbatch", "direct", OURS, "rust in memory")
        if any(t in r for r in rows.values())
    ]
    tools += sorted({t for r in rows.values() for t in r} - set(tools))
    others = [t for t in tools if t not in (OURS, "rust in memory")]
    head = "| case | " + " | ".join(tools) + " | " + " | ".join(f"{OURS} vs {t}" for t in others) + " |"
    lines = [head, "|" + "---|" * (1 + len(tools) + len(others))]
    for case in order:
        r = rows[case]
        cells = []
        for t in tools:
            if t in r:
                secs, nbytes, ncells = r[t]
                rate = f", {nbytes / secs / 1e6:.0f} MB/s" if nbytes >= 1_000_000 else ""
                rate += f", {ncells / secs:,.0f} cells/s" if ncells else ""
                cells.append(f"{secs * 1e3:.1f} ms{rate}")
            else:
                cells.append("")
        ratios = []
        for t in others:
            if t in r and OURS in r:
                ratios.append(f"**{r[t][0] / r[OURS][0]:.2f}x**")
            else:
                ratios.append("")
        lines.append(f"| {case} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    bound_lines = []
    for case in order:
        if "full " in case and "(" in case and OURS in rows[case]:
            prefix = case.split(": ")[0] + ": " if ": " in case else ""
            layout = case[case.index("(") :]
            direction = "encode" if "write" in case else "decode"
            bound = rows.get(f"{prefix}raw {direction} bound {layout}", {}).get("rust in memory")
            if bound:
                bound_lines.append(f"- {case}: sparsezarr reaches **{bound[0] / rows[case][OURS][0]:.0%}** of the raw {direction} bound")
    if storage:
        ref = next((i["stored_bytes"] for i in storage if i["pipeline"].startswith("anndata")), None)
        ops = list(storage[0].get("peaks", {}))
        if ops:
            head2 = "| layout | stored | stored vs anndata CSR | " + " | ".join(f"peak memory: {op} (x sparse payload)" for op in ops) + " |"
            lines += ["", head2, "|" + "---|" * (3 + len(ops))]
            for i in storage:
                ratio = f"{i['stored_bytes'] / ref:.2f}x" if ref else ""
                peaks = " | ".join(f"{i['peaks'][op] / 1e6:.0f} MB ({i['peaks'][op] / max(1, i['payload'][op]):.1f}x)" for op in ops)
                lines.append(f"| {i['pipeline']} | {i['stored_bytes'] / 1e6:.1f} MB | {ratio} | {peaks} |")
        else:
            lines += ["", "| store | stored | stored vs anndata |", "|---|---|---|"]
            for i in storage:
                ratio = f"{i['stored_bytes'] / ref:.2f}x" if ref else ""
                lines.append(f"| {i.get('label', i['pipeline'])} | {i['stored_bytes'] / 1e6:.1f} MB | {ratio} |")
    machine = results.get("machine_info", {})
    footer = (
        f"\n\nMachine: {machine.get('cpu', {}).get('brand_raw', platform.processor())}, {os.cpu_count()} cores, Python {platform.python_version()}."
    )
    return "\n".join(lines) + ("\n\n" + "\n".join(bound_lines) if bound_lines else "") + footer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", help="suite name: benches/test_bench_<suite>.py")
    ap.add_argument("--json", type=Path, help="keep the raw pytest-benchmark JSON here")
    ap.add_argument("--from-json", type=Path, help="only render an existing JSON file")
    # Everything after "--" goes to pytest (argparse would take "-k" for an option of its own,
    # and a positional list after "suite" is filled, empty, before "--" is reached).
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = ap.parse_args(argv[:cut])
    args.pytest_args = argv[cut + 1 :]
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        json_path = args.json or Path(tempfile.mkdtemp()) / "bench.json"
        run(args.suite, json_path, args.pytest_args)
        results = json.loads(json_path.read_text())
    print(render(results))


if __name__ == "__main__":
    main()
