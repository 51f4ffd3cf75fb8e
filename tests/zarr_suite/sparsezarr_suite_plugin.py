"""pytest plugin used when running zarr-python's test suite against sparsezarr.Pipeline.

* Fails the session at start if zarr does not resolve the configured pipeline to ours.
* Turns every entry of the ``known_failures-<zarr version>.txt`` list into a strict expected failure (with its reason).
* Reports, at the end, how many pipeline calls ran natively in Rust and how many fell back.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

import pytest


def _known_failures() -> dict[str, str]:
    path = os.environ.get("SPARSEZARR_KNOWN_FAILURES")
    entries: dict[str, str] = {}
    if not path or not Path(path).exists():
        return entries
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        node, _, reason = line.partition(" # ")
        entries[node.strip()] = reason.strip() or "listed as a known failure"
    return entries


class _ReasonCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        reason = msg.split(": ", 1)[-1]
        self.reasons[re.sub(r"\d+", "N", reason)[:160]] += 1


_COUNTER = _ReasonCounter()


def pytest_sessionstart(session: pytest.Session) -> None:
    logger = logging.getLogger("sparsezarr")
    logger.addHandler(_COUNTER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    import zarr
    from zarr.registry import get_pipeline_class

    import sparsezarr

    cls = get_pipeline_class()
    if cls is not sparsezarr.Pipeline:
        raise pytest.UsageError(f"zarr resolved codec_pipeline.path to {cls!r}, not sparsezarr.Pipeline")
    session.config._sparsezarr_version = zarr.__version__  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    known = _known_failures()
    seen = set()
    for item in items:
        reason = known.get(item.nodeid)
        if reason is not None:
            seen.add(item.nodeid)
            item.add_marker(pytest.mark.xfail(reason=f"sparsezarr known failure: {reason}", strict=True))
    config._sparsezarr_unmatched = sorted(set(known) - seen)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    from sparsezarr.pipeline import STATS

    tr = terminalreporter
    tr.section("sparsezarr")
    tr.write_line("pipeline calls: " + ", ".join(f"{k}={v}" for k, v in sorted(STATS.items())))
    for reason, n in _COUNTER.reasons.most_common(40):
        tr.write_line(f"  fallback x{n}: {reason}")
    unmatched = getattr(config, "_sparsezarr_unmatched", [])
    if unmatched:
        tr.write_line(f"known-failure entries that matched no collected test: {unmatched}")
