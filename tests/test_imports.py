"""The shape of the package, read from its source: imports flow down the pipeline, no two folders
import each other, nothing reaches into another folder's private names, only ``_widgets`` uses
Qt or napari, and napari's private API only through ``_widgets/_napari_private.py``.

The graph is built with :mod:`ast` from every ``.py`` file under ``src/napari_pbip``, counting every
import (module level, inside functions and under ``TYPE_CHECKING``): an import deferred to keep
start-up cheap is still a dependency. A node of the graph is a top-level folder (``stage1``) or a
top-level module (``metrics``); the root ``__init__`` is ``napari_pbip``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "napari_pbip"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# The pipeline from the bottom up. A node may import its own modules and any node of a lower
# layer; nodes of one layer are independent of each other (stage 2 trains on any masks, not on
# stage-1 code). A new folder or top-level module must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("napari_pbip",),  # the package's __init__: its version
    ("errors",),
    ("_atomic", "_device"),  # atomic writes and JSON, the torch device
    ("settings", "events"),  # the frozen-settings base; progress events and jobs
    ("data",),  # data sets: layouts, labels, images and masks, weak tiling
    ("synthetic", "metrics", "models", "export"),  # made-up data; scores; networks; file formats
    ("evaluate", "engine"),  # scoring a folder of masks; what both stages' training shares
    ("bank",),  # stage 0: the prototype image bank
    ("stage1", "stage2"),  # CAM training and its masks; segmenter training and its predictor
    ("predict",),  # any model folder as a dense predictor, over tiles and image folders
    ("slides",),  # whole slides: reading, tissue, tiled segmentation
    ("demo",),  # the whole pipeline on synthetic data
    ("_widgets",),  # the napari plugin: the only Qt/napari code
    ("cli",),  # the outer shell; it opens the GUI for `pbip demo --view` (_widgets.show_demo)
    ("training", "inference"),  # old import paths the 0.1 docs showed; nothing imports them
)
QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "superqt", "magicgui")
QT_HOME = "_widgets"
CORE = [  # importing any of these must not load Qt or napari
    "napari_pbip",
    "napari_pbip.bank",
    "napari_pbip.cli.main",
    "napari_pbip.demo.pipeline",
    "napari_pbip.evaluate",
    "napari_pbip.export",
    "napari_pbip.metrics",
    "napari_pbip.models",
    "napari_pbip.predict.images",
    "napari_pbip.slides",
    "napari_pbip.slides.segment",
    "napari_pbip.stage1",
    "napari_pbip.stage2",
    "napari_pbip.synthetic.synth",
    "napari_pbip.synthetic.synth_slide",
]


@dataclass(frozen=True)
class Import:
    """``source`` (a module) uses ``target``: a module, or ``module.name`` for a name in it."""

    source: str
    line: int
    target: str
    where: str  # file:line, for messages

    @property
    def source_node(self) -> str:
        return node_of(self.source)

    @property
    def target_node(self) -> str:
        return node_of(self.target)


def node_of(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(src: Path = SRC) -> Iterator[Import]:
    """Every use of the package by its own modules.

    ``from a import b`` gives ``a.b`` whether ``b`` is a submodule or a name; an attribute read
    off an imported module (``_atomic._json_default``) counts as importing that name.
    """
    mods = modules(src)
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        where = path.relative_to(src.parent)
        bound: dict[str, str] = {}  # local name -> module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in mods:
                        bound[alias.asname or alias.name] = full
                    yield Import(module, node.lineno, full, f"{where}:{node.lineno}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        yield Import(module, node.lineno, alias.name, f"{where}:{node.lineno}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
            ):
                target = f"{bound[node.value.id]}.{node.attr}"
                yield Import(module, node.lineno, target, f"{where}:{node.lineno}")


def rank() -> dict[str, int]:
    return {name: i for i, layer in enumerate(LAYERS) for name in layer}


def upward_imports(found: list[Import]) -> list[str]:
    ranks = rank()
    bad = []
    for imp in found:
        a, b = imp.source_node, imp.target_node
        if a != b and a in ranks and b in ranks and ranks[b] >= ranks[a]:
            how = "its own layer" if ranks[a] == ranks[b] else f"layer {ranks[b]}, above its layer {ranks[a]}"
            bad.append(f"{imp.where}: {a} imports {imp.target} ({b}: {how})")
    return bad


def folder_cycles(found: list[Import]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each as a sorted list."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.source_node, set())
        if imp.source_node != imp.target_node:
            graph[imp.source_node].add(imp.target_node)
            graph.setdefault(imp.target_node, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def private_reaches(found: list[Import]) -> list[str]:
    """Uses of a ``_name`` (module, function, constant) below a top-level node, from another node.

    The underscore on a top-level module (``_atomic``, ``_device``, ``_widgets``) means "not user
    API" and the whole package may import it; below that, ``_name`` is private to its node
    (``slides._backends`` to ``slides``, ``_atomic._json_default`` to ``_atomic``).
    """
    bad = []
    for imp in found:
        parts = imp.target.split(".")
        for part in parts[2:]:
            if part.startswith("_") and not part.startswith("__") and imp.source_node != imp.target_node:
                bad.append(f"{imp.where}: {imp.source} uses {imp.target}, private to {imp.target_node}")
                break
    return bad


def qt_outside_widgets(src: Path = SRC) -> list[str]:
    bad = []
    for module, path in modules(src).items():
        if node_of(module) == QT_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in QT:
                    bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: imports {name}")
    return bad


def napari_private_outside_the_shim(src: Path = SRC) -> list[str]:
    """``x._name`` in ``_widgets`` (other than on self/cls) outside ``_widgets/_napari_private.py``."""
    bad = []
    for path in sorted((src / QT_HOME).glob("*.py")):
        if path.name == "_napari_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                bad.append(f"{path.relative_to(src.parent)}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_the_graph_sees_the_imports_it_judges():
    found = list(imports())
    targets = {(i.source, i.target) for i in found}
    # a module-level relative import, a deferred one, and a private module of a folder
    assert ("napari_pbip.stage1.loop", "napari_pbip.engine.augment") in targets
    assert ("napari_pbip.stage1.loop", "napari_pbip.stage1.calibrate.calibrate_presence") in targets
    assert ("napari_pbip.slides.readers", "napari_pbip.slides._backends") in targets
    assert len({i.source_node for i in found}) >= 15


def test_every_folder_and_top_level_module_has_a_layer():
    nodes = {node_of(m) for m in modules()}
    placed = [name for layer in LAYERS for name in layer]
    assert len(placed) == len(set(placed)), "a node is in two layers"
    assert nodes - set(placed) == set(), "place the new folder or module in LAYERS (tests/test_imports.py)"
    assert set(placed) - nodes == set(), "LAYERS names a folder that no longer exists"


def test_imports_flow_down_the_pipeline():
    bad = upward_imports(list(imports()))
    assert not bad, "imports against the pipeline order (LAYERS):\n" + "\n".join(bad)


def test_no_two_folders_import_each_other():
    cycles = folder_cycles(list(imports()))
    assert not cycles, f"folders in a circle of imports: {cycles}"


def test_no_module_uses_another_folders_private_names():
    bad = private_reaches(list(imports()))
    assert not bad, "private names used from another folder (give them a public name):\n" + "\n".join(bad)


def test_only_the_widgets_import_qt_or_napari():
    bad = qt_outside_widgets()
    assert not bad, f"Qt/napari imported outside {QT_HOME}/:\n" + "\n".join(bad)


def test_napari_private_names_are_used_only_through_one_module():
    bad = napari_private_outside_the_shim()
    assert not bad, "napari private API outside _widgets/_napari_private.py:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each rule fails on a package that breaks it (so a green run means something)."""
    pkg = tmp_path / PACKAGE
    for name, text in {
        "__init__.py": "",
        "stage1/__init__.py": "",
        "stage1/loop.py": "from ..stage2 import seg_train\nfrom ..slides._backends import stamp\n",
        "stage2/__init__.py": "",
        "stage2/seg_train.py": "from ..stage1 import loop\nimport qtpy\n",
        "slides/__init__.py": "",
        "slides/_backends.py": "stamp = 1\n",
        "slides/readers.py": "from . import _backends\nx = _backends.stamp\n",
        "engine/__init__.py": "",
        "engine/runlog.py": "from .. import _atomic\ny = _atomic._json_default\n",
        "_atomic.py": "_json_default = str\n",
        "_widgets/__init__.py": "",
        "_widgets/demo_view.py": "def f(viewer):\n    viewer._add_layer_from_data(1, {}, 'image')\n",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = list(imports(pkg))
    assert len(upward_imports(found)) == 3  # stage1 <-> stage2 (one layer), stage1 -> slides (above)
    assert folder_cycles(found) == [["stage1", "stage2"]]
    assert [b.split(": ", 1)[0] for b in private_reaches(found)] == [
        "napari_pbip/engine/runlog.py:2",
        "napari_pbip/stage1/loop.py:2",
    ]
    assert [b.split(": ", 1)[0] for b in qt_outside_widgets(pkg)] == ["napari_pbip/stage2/seg_train.py:2"]
    assert [b.split(": ", 1)[0] for b in napari_private_outside_the_shim(pkg)] == [
        "napari_pbip/_widgets/demo_view.py:2"
    ]


def test_core_imports_without_qt_or_napari():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"bad = sorted(m for m in {QT!r} if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "", f"the core imported {out.stdout.strip()}"


def test_old_import_paths_the_docs_showed_still_work_and_say_where_things_moved():
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from napari_pbip.training import TrainSettings, train\n"
        "    from napari_pbip.training.seg_settings import SegSettings\n"
        "    from napari_pbip.inference.segment import SegmentSettings, segment_slide\n"
        "print('\\n'.join(str(w.message) for w in caught if w.category is DeprecationWarning))\n"
        "import napari_pbip.stage1 as s1, napari_pbip.stage2.seg_settings as s2, napari_pbip.slides.segment as sl\n"
        "assert (TrainSettings, train, SegSettings) == (s1.TrainSettings, s1.train, s2.SegSettings)\n"
        "assert (SegmentSettings, segment_slide) == (sl.SegmentSettings, sl.segment_slide)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "napari_pbip.training moved to napari_pbip.stage1 (stage 2: napari_pbip.stage2); import from there",
        "napari_pbip.training.seg_settings moved to napari_pbip.stage2.seg_settings; import from there",
        "napari_pbip.inference.segment moved to napari_pbip.slides.segment; import from there",
    ]
