"""pytest plugin used when running zarr-python's test suite against sparsezarr.Pipeline.

* Fails the session at start if zarr does not resolve the configured pipeline to ours.
* Turns every entry of the ``known_failures-<zarr version>.txt`` list into a strict expected failure (with its reason).
* Reports, at the end, how many pipeline calls ran natively in Rust and how many fell back.
* In referee mode (``SPARSEZARR_REFEREE=1``, set by ``run.py --referee``), zarr's default pipeline
  stays the configured one, and only arrays on the store under test use sparsezarr.Pipeline: the
  model store of zarr's ``ZarrHierarchyStateMachine`` is replaced by a ``ReferenceModelStore``
  whose arrays (and their sharding codecs' inner chunks) run through zarr's own
  ``BatchedCodecPipeline``. zarr's stateful tests then compare our pipeline with zarr's, instead
  of our pipeline with itself. The session fails if either side was never used.
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
_REFEREE = os.environ.get("SPARSEZARR_REFEREE") == "1"
# Pipelines built in referee mode, by side: ("store", "Pipeline"), ("model", "BatchedCodecPipeline").
_BUILT: Counter[tuple[str, str]] = Counter()


def _install_referee() -> None:
    """Arrays on the reference model store get zarr's BatchedCodecPipeline; all others ours."""
    import zarr
    import zarr.core.array as zarr_array
    from zarr.storage import MemoryStore
    from zarr.testing import stateful

    class ReferenceModelStore(MemoryStore):
        """The hierarchy state machine's model: a MemoryStore whose arrays use zarr's own pipeline."""

    original = zarr_array.create_codec_pipeline
    control = os.environ.get("SPARSEZARR_REFEREE_CONTROL") == "1"
    if control:
        # The negative control: the store's arrays read one wrong value, which the state
        # machines must find (tests/test_zarr_suite.py checks that they do).
        import sparsezarr

        class OffByOne(sparsezarr.Pipeline):
            async def read(self, batch_info, out, drop_axes=()):  # type: ignore[no-untyped-def]
                result = await super().read(batch_info, out, drop_axes)
                values = out.as_numpy_array()
                if values.size and values.dtype.kind in "iuf":
                    values.flat[0] += 1
                elif values.size and values.dtype.kind == "b":
                    values.flat[0] = not values.flat[0]
                return result

    def create_codec_pipeline(metadata, *, store=None):  # type: ignore[no-untyped-def]
        side = "model" if isinstance(store, ReferenceModelStore) else "store"
        path = "zarr.core.codec_pipeline.BatchedCodecPipeline" if side == "model" else "sparsezarr.Pipeline"
        with zarr.config.set({"codec_pipeline.path": path}):
            pipeline = original(metadata, store=store)
        if control and side == "store":
            pipeline.__class__ = OffByOne
        _BUILT[side, type(pipeline).__name__] += 1
        return pipeline

    zarr_array.create_codec_pipeline = create_codec_pipeline
    init = stateful.ZarrHierarchyStateMachine.__init__

    def init_with_reference_model(self, store):  # type: ignore[no-untyped-def]
        init(self, store)
        self.model = ReferenceModelStore()
        zarr.group(store=self.model)

    stateful.ZarrHierarchyStateMachine.__init__ = init_with_reference_model  # type: ignore[method-assign]


if _REFEREE:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "sparsezarr-referee",
        max_examples=int(os.environ.get("SPARSEZARR_REFEREE_EXAMPLES", "300")),
        deadline=None,
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    logger = logging.getLogger("sparsezarr")
    logger.addHandler(_COUNTER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    import zarr
    from zarr.registry import get_pipeline_class

    import sparsezarr

    cls = get_pipeline_class()
    if _REFEREE:
        if cls is sparsezarr.Pipeline:
            raise pytest.UsageError("referee mode needs zarr's own pipeline as the configured default")
        _install_referee()
    elif cls is not sparsezarr.Pipeline:
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
    if _REFEREE:
        tr.write_line("pipelines built: " + ", ".join(f"{side} {name} x{n}" for (side, name), n in sorted(_BUILT.items())))
    tr.write_line("pipeline calls: " + ", ".join(f"{k}={v}" for k, v in sorted(STATS.items())))
    for reason, n in _COUNTER.reasons.most_common(40):
        tr.write_line(f"  fallback x{n}: {reason}")
    unmatched = getattr(config, "_sparsezarr_unmatched", [])
    if unmatched:
        tr.write_line(f"known-failure entries that matched no collected test: {unmatched}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _REFEREE or exitstatus != 0:
        return
    # A referee run that never built both sides compared nothing: fail it.
    sides = dict(_BUILT.keys())  # {side: pipeline class name}
    if sides.get("store") != "Pipeline" or sides.get("model") != "BatchedCodecPipeline":
        session.exitstatus = 1
        print(f"sparsezarr referee: both sides must be used, built {dict(_BUILT)}")
