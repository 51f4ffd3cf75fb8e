"""The shape of the code, checked: no source file over 1000 lines, and no import cycle in the Rust
core (between its top-level modules, nor between its files), as ``docs/architecture.md``
promises. Runs on the repository's sources (skipped where they are not beside the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "rust" / "sparsezarr-core" / "src"
MAX_LINES = 1000

pytestmark = pytest.mark.skipif(not CORE.is_dir(), reason="the Rust sources are not beside the tests")


def _sources() -> list[Path]:
    return [p for d in ("rust", "python") for p in (ROOT / d).rglob("*") if p.suffix in (".rs", ".py") and "target" not in p.parts]


def test_no_source_file_is_over_1000_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def _node(path: Path, level: str) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    parts = [p for p in rel.parts if p != "mod"]
    return parts[0] if level == "module" else "/".join(parts)


def _target(ref: str, level: str) -> str:
    parts = ref.split("::")
    if level == "module":
        return parts[0]
    if len(parts) > 1 and ((CORE / parts[0] / f"{parts[1]}.rs").exists() or (CORE / parts[0] / parts[1] / "mod.rs").exists()):
        return f"{parts[0]}/{parts[1]}"
    return parts[0]


def _graph(level: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in CORE.rglob("*.rs"):
        text = path.read_text()
        # Unit tests may use anything; only the code proper counts.
        text = text.split("\n#[cfg(test)]\nmod tests {")[0]
        if path.name.endswith("_tests.rs"):
            continue
        node = _node(path, level)
        for ref in re.findall(r"crate::([a-z_0-9]+(?:::[a-z_0-9]+)?)", text):
            target = _target(ref, level)
            if target != node:
                graph.setdefault(node, set()).add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, stack)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


@pytest.mark.parametrize("level", ["module", "file"])
def test_the_core_has_no_import_cycle(level: str) -> None:
    graph = _graph(level)
    assert graph, "no imports found: the check itself is broken"
    assert _cycle(graph) is None, f"import cycle between {level}s: {' -> '.join(_cycle(graph) or [])}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
