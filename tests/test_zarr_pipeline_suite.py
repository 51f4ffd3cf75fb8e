"""zarr's own behaviour suite for third-party codec pipelines, run against sparsezarr.Pipeline.

zarr >= 3.3 ships ``CodecPipelineTests`` in ``tests/test_codec_pipeline_suite.py`` of its sdist
(not in the wheel): every scenario (roundtrips across layouts and codecs, partial writes after a
reopen, empty shards deleted, ``read_missing_chunks`` semantics, ...) on a store with sync I/O
(``MemoryStore``) and one without (an async-only wrapper). zarr subclasses it for its Batched and
Fused pipelines; this module subclasses it for ours, from the sdist of the installed zarr
(downloaded once, see ``tests/zarr_suite/sdist.py``).

Older zarr (3.1, 3.2) has no such suite: the module is skipped there, with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import zarr

from sparsezarr._compat import ZARR_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parent / "zarr_suite"))

if ZARR_VERSION < (3, 3):
    pytest.skip(f"zarr {zarr.__version__} ships no CodecPipelineTests (zarr >= 3.3 does)", allow_module_level=True)

from sdist import suite_dir


def _load_suite():
    path = suite_dir() / "tests" / "test_codec_pipeline_suite.py"
    spec = importlib.util.spec_from_file_location("zarr_codec_pipeline_suite", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


_suite = _load_suite()


class TestSparsezarrPipeline(_suite.CodecPipelineTests):
    """Every scenario of zarr's suite, with sparsezarr.Pipeline selected."""

    pipeline_path = "sparsezarr.Pipeline"


class TestSparsezarrPipelineStrict(_suite.CodecPipelineTests):
    """The same scenarios in strict mode: on the store with sync I/O (``MemoryStore``) nothing
    may fall back to zarr's pipeline, so every scenario there proves the Rust engine itself."""

    pipeline_path = "sparsezarr.Pipeline"

    #: Scenarios whose arrays use a codec that runs in zarr's pipeline by design (README,
    #: "Limitations"); the non-strict class above runs them.
    PYTHON_ONLY: ClassVar[dict[str, str]] = {"v2-filter-gzip-roundtrip": "its numcodecs Delta filter runs in zarr's pipeline"}

    @pytest.fixture(autouse=True)
    def _strict(self, request, store, _use_pipeline):
        if type(store) is not zarr.storage.MemoryStore:
            pytest.skip("stores without a native route fall back by design; strict mode would refuse them")
        scenario = getattr(request.node, "callspec", None) and request.node.callspec.params.get("scenario")
        if scenario is not None and scenario.id in self.PYTHON_ONLY:
            pytest.skip(self.PYTHON_ONLY[scenario.id])
        with zarr.config.set({"codec_pipeline.strict": True}):
            yield


def test_suite_runs_against_our_pipeline():
    """The suite really selects our class (a wrong pipeline_path would silently test zarr's)."""
    from zarr.registry import get_pipeline_class

    with zarr.config.set({"codec_pipeline.path": TestSparsezarrPipeline.pipeline_path}):
        import sparsezarr

        assert get_pipeline_class(reload_config=False) is sparsezarr.Pipeline
        a = zarr.create_array(zarr.storage.MemoryStore(), shape=(8,), chunks=(4,), dtype="i4")
        a[:] = np.arange(8)
        assert type(a._async_array.codec_pipeline) is sparsezarr.Pipeline
