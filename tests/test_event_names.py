"""Readers name a job's stages and a training step's numbers by what their producers define.

A stage or metric name spelled as a string where it is read drifts silently from the one the job
yields: rename a stage and the reader compares against nothing, with no error. So readers import
the stage constants (``slides.segment.SEGMENT_STAGE``, ...) and read a training step's numbers
from its typed :class:`~napari_pbip.events.StepMetrics`. This test reads the source of ``src/``,
``tests/``, ``benchmarks/`` and ``scripts/`` with ``ast`` and fails on:

* a comparison of an ``X.stage`` with a string (``ev.stage == "train"``, ``ev.stage in ("a", "b")``);
* a number read from ``X.metrics``, ``X.parts`` or ``X.series`` (a plot's curves) by a string key
  (``ev.metrics["fg"]``, ``"val_miou" in ev.metrics``, ``ev.metrics.get("lr")``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "tests", "benchmarks", "scripts")
NUMBERS = {"metrics", "parts", "series"}  # attributes holding named numbers


def _attr(node: ast.AST, names: set[str]) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in names


def _strings(node: ast.AST) -> bool:
    """A string constant, or a tuple/list/set of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_strings(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def literal_names(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, source)`` of every stage or metric name read as a string literal in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            stage = any(_attr(o, {"stage"}) for o in operands)
            numbers = any(_attr(o, NUMBERS) for o in node.comparators)
            if (stage or numbers) and any(_strings(o) for o in operands):
                found.append(node)
        elif isinstance(node, ast.Subscript) and _attr(node.value, NUMBERS) and _strings(node.slice):
            found.append(node)
        elif (
            isinstance(node, ast.Call)
            and _attr(node.func, {"get"})
            and _attr(node.func.value, NUMBERS)
            and node.args
            and _strings(node.args[0])
        ):
            found.append(node)
    return [(n.lineno, ast.unparse(n)) for n in found]


@pytest.mark.parametrize(
    "code",
    [
        'ev.stage == "train"',
        '"segment" != event.stage',
        'e.stage in ("slide", "segment")',
        'ev.metrics["fg"]',
        '"val_miou" in ev.metrics',
        'ev.payload.parts.get("cls")',
        'w.plot.series["loss"]',
    ],
)
def test_the_check_finds_a_literal_name(code):
    assert literal_names(ast.parse(code)), code


@pytest.mark.parametrize(
    "code",
    [
        "ev.stage == SEGMENT_STAGE",
        "ev.payload.parts[FG]",
        "w.plot.series[LOSS]",
        "tif.series[0]",
        'kind == "x"',
    ],
)
def test_the_check_passes_a_named_constant(code):
    assert not literal_names(ast.parse(code)), code


def test_no_reader_compares_a_stage_or_reads_a_metric_by_a_literal_name():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, text in literal_names(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, "import the stage or metric name from the module that yields it:\n" + "\n".join(found)
