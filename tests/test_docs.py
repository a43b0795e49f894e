"""The user documentation cannot drift from the code.

Checks, over README.md and docs/*.md:

1. docs/cli.md is exactly what ``scripts/gen_cli_docs.py`` generates from the parser now, so a
   changed option fails until the reference is regenerated.
2. Every ``pbip ...`` command in a fenced ``bash`` block parses with the real parser
   (``build_parser().parse_args``), whether the block is run or not: a renamed option fails.
3. Every fenced ``bash`` and ``python`` block is either run here or listed in ``NOT_RUN`` with
   the reason. The blocks of one page run in order in one working directory (a page reads like a
   session), after the inputs the page names in ``PAGE_INPUTS`` are copied in; see
   ``INPUTS`` for what each input name is. ``pbip`` on the PATH there is a small script that
   calls the real CLI's ``main`` with the small settings in ``FAST`` forced (tiny models, a few
   patches, one epoch), so each command takes seconds; the command as written is still parsed by
   check 2, and ``EXPECTED_OUTPUTS`` names files each page's commands must have written.
   Blocks that do not run still have their ``from napari_pbip... import name`` lines checked.
4. Relative links and images resolve (anchors included), every docs page is linked from
   docs/index.md, and shell code is fenced as ``bash`` (so these checks see it).

How to write a doc page that passes: see docs/architecture.md, section "Docs that cannot drift".
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"sh", "shell", "console", "zsh", "shell-session"}  # must be written as ```bash
PYTHON_LANGS = {"python", "py"}

# (page, a substring found in exactly one of its blocks) -> why the test does not run that block.
NOT_RUN: dict[tuple[str, str], str] = {
    (
        "README.md",
        "make demo",
    ): "takes minutes (the whole demo); `make test` would run this suite recursively",
    ("README.md", "pip install torch"): "installs from the package index (network)",
    ("README.md", "--encoder vinid/plip"): "needs model-hub weights (vinid/plip, nvidia/mit-b1)",
    ("docs/index.md", "pbip demo --out demo-out"): "takes minutes (the whole demo)",
    ("docs/install.md", "git clone"): "clones from the network and builds a venv (minutes)",
    ("docs/install.md", "pip install torch"): "installs from the package index (network)",
    ("docs/install.md", "apt-get install"): "installs Debian packages (root, network)",
    ("docs/gui.md", "napari slide.svs"): "opens the napari GUI",
    ("docs/gui.md", "pbip demo --out demo-out --view"): "takes minutes and opens the napari GUI",
    ("docs/gui.md", "scripts/screenshots.py"): "opens the napari GUI under Xvfb; takes minutes",
    ("docs/data.md", "pbip data info LUAD-HistoSeg/"): "needs the public data sets "
    "(tests/data/test_layouts.py reads samples of them from ../shared/data)",
    ("docs/data.md", "--images LUAD-HistoSeg/val/img"): "needs the public data set",
    ("docs/gpu.md", "pbip train --dataset data --bank bank --out run --device cuda"): "needs a CUDA GPU",
    ("docs/gpu.md", "bench_segment.py --size 20000 --device cuda"): "needs a CUDA GPU; takes minutes",
    ("docs/gpu.md", "PBIP_DEVICE=cuda:1"): "needs two CUDA GPUs",
    ("docs/gpu.md", "TrainSettings(device="): "needs a CUDA GPU",
    (
        "docs/cluster.md",
        "dask scheduler",
    ): "starts long-lived scheduler and worker processes on several machines",
    ("docs/cluster.md", "LocalCluster("): "starts worker processes (about 10 s here); "
    "tests/slides/test_segment_distributed.py runs the same path",
    (
        "docs/paper-config.md",
        "--encoder vinid/plip --k 3",
    ): "needs model-hub weights (vinid/plip, nvidia/mit-b1) and LUAD-HistoSeg; trains for hours",
    ("docs/paper-config.md", "--segmenter deeplabv2"): "needs ImageNet ResNet-101 and MiT-B1 weights",
    ("docs/paper-config.md", "hf download"): "downloads from the model hub",
    ("docs/paper-config.md", "SegformerModel.from_pretrained"): "downloads from the model hub",
    ("docs/paper-config.md", "--backbone weights/mit-b1 --levels"): "needs the saved PLIP and MiT-B1 weights",
    ("docs/paper-config.md", "save_file("): "downloads ResNet-101 weights from the model hub",
    ("docs/architecture.md", "gen_cli_docs.py"): "rewrites docs/cli.md in the repository; "
    "test_cli_reference_is_generated_from_the_parser runs the generator instead",
    ("docs/benchmarks.md", "make demo"): "takes minutes (the whole demo)",
    ("docs/benchmarks.md", "compare_real.py"): "trains 12 stage-1 and 12 stage-2 runs on real data (hours)",
    (
        "docs/benchmarks.md",
        "stage2_variants.py --pseudo-quality",
    ): "trains stage-2 segmenters on compare_real.py's real-data runs (hours)",
    (
        "docs/benchmarks.md",
        "stage2_variants.py --masks pseudo-tta --tag ptta",
    ): "trains 12 stage-2 segmenters on compare_real.py's real-data runs (hours)",
    (
        "docs/benchmarks.md",
        "stage2_variants.py --masks pseudo-tta --seg-weak-set",
    ): "tiles the real WSSS4LUAD images again and trains 3 stage-2 segmenters on compare_real.py's runs (1 hour)",
    (
        "docs/benchmarks.md",
        "--seeds 0 1 --scales 1",
    ): "scores the 21 stage-2 segmenters of the runs above on real data, at two scale settings (1 hour)",
    (
        "docs/benchmarks.md",
        "--seg-set epochs=20 --tag ep20",
    ): "trains 12 stage-2 segmenters of 20 epochs on compare_real.py's real-data runs (2-3 hours)",
    (
        "docs/benchmarks.md",
        "--seg-set cutmix=0.5 --tag cm0.5",
    ): "trains 12 stage-2 segmenters on compare_real.py's real-data runs (2-3 hours)",
    (
        "docs/benchmarks.md",
        "--masks truth --tag oracle0.8",
    ): "trains 3 stage-2 segmenters on the true masks of compare_real.py's real-data tiles (30 min)",
    (
        "docs/benchmarks.md",
        "--masks truth --tag oracle20 --seeds 1 2",
    ): "trains 12 stage-2 segmenters on the true masks of compare_real.py's real-data tiles (2 hours)",
    (
        "docs/benchmarks.md",
        "--seg-set backbone=efficientnet_lite1 --tag lite1",
    ): "trains 3 stage-2 segmenters on compare_real.py's real-data runs (45 min)",
    ("docs/benchmarks.md", "fill_match.py"): "encodes the real WSSS4LUAD images in ../shared/data (minutes)",
    (
        "docs/benchmarks.md",
        "bench_segment.py --slide demo-out",
    ): "needs a finished demo and TIAToolbox; takes minutes",
    (
        "docs/benchmarks.md",
        "bench_segment.py --memory",
    ): "writes a 40k x 40k slide and segments it (about 20 min)",
    ("docs/benchmarks.md", "bench_gui_responsiveness.py --only responsiveness"): "opens napari under its own "
    "Xvfb; takes minutes",
    ("docs/benchmarks.md", "--slide-previews"): "opens napari under its own Xvfb; takes minutes",
    (
        "docs/benchmarks.md",
        "own_slide_loop.py",
    ): "writes two 16k px slides and trains stage 1 and stage 2 twice (about an hour on 2 loaded cores)",
    ("docs/architecture.md", "pytest tests/test_docs.py"): "runs this test (recursion)",
}

# What each input name in PAGE_INPUTS is (all tiny, made once per test session).
INPUTS = {
    "data": "synthetic weakly labelled data set (generic layout, 12 train + 2 val + 2 test patches of 64 px)",
    "annotated": "annotated images: annotated/img/*.png (256 px), annotated/mask/*.png, annotated/dataset.json",
    "classes": "one folder of single-class patches per class (classes/<class>/*.png)",
    "bank": "image bank built from data/ with tiny-encoder",
    "run": "stage-1 run trained on data/ (tiny-backbone, 1 epoch)",
    "masks": "pseudo-masks of data/ train from run/",
    "seg": "stage-2 segmenter (lite0-seg head on tiny-backbone, 1 epoch, --mpp 0.5)",
    "slide.svs": "a synthetic 512 px pyramidal tiled TIFF at 0.5 um/px named slide.svs, with slide.labels.tif",
    "slides": "slides/case-01.svs and slides/case-02.svs, synthetic 512 px slides",
}

# page -> inputs copied into its working directory before its blocks run.
PAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "README.md": ("data", "slide.svs"),
    "docs/data.md": ("annotated", "classes"),
    "docs/exports.md": ("seg", "slide.svs"),
    "docs/cluster.md": ("seg", "slides"),
    "docs/gpu.md": ("data",),
}

# page -> files its run blocks must have written (a block that "succeeds" without output fails).
EXPECTED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "README.md": (
        "bank/bank.json",
        "run/model.json",
        "seg/model.json",
        "slide.zarr/zarr.json",
        "slide.geojson",
        "slide.csv",
    ),
    "docs/data.md": (
        "bank-classes",
        "weak/dataset.json",
        "synth/dataset.json",
        "synthetic-slide.tif",
        "from-slides/dataset.json",
        "from-slides/tiles.csv",
    ),
    "docs/exports.md": (
        "slide.zarr/zarr.json",
        "slide.geojson",
        "slide.csv",
        "slide-fine.geojson",
        "slide-areas.csv",
    ),
    "docs/cluster.md": ("out/case-01.zarr/zarr.json", "out/case-02.geojson", "out/case-02.csv"),
    "docs/gpu.md": ("bank-cpu",),
}

# Options the pbip shim forces when it runs a command (replaced if given, added if not).
FAST: dict[str, list[tuple[str, str | None]]] = {
    "data synth": [("--n-train", "12"), ("--n-val", "2"), ("--n-test", "2"), ("--size", "64")],
    "data synth-slide": [("--size", "512")],
    "bank build": [("--encoder", "tiny-encoder"), ("--k", "1"), ("--per-cluster", "2")],
    "train": [
        ("--backbone", "tiny-backbone"),
        ("--epochs", "1"),
        ("--image-size", "64"),
        ("--match-size", "32"),
        ("--batch-size", "4"),
    ],
    "train-seg": [
        ("--segmenter", "lite0-seg"),
        ("--backbone", "tiny-backbone"),
        ("--epochs", "1"),
        ("--crop-size", "64"),
        ("--batch-size", "4"),
    ],
}

PAGE_TIMEOUT_S = 300

SHIM = '''\
#!{python}
"""pbip for the docs test: the real CLI with the FAST options forced (see tests/test_docs.py)."""
import json, os, sys

FAST = json.loads({fast!r})
GROUPS = {{"data", "bank"}}


def fast(argv):
    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        return argv
    key = " ".join(argv[:2]) if argv[0] in GROUPS and len(argv) > 1 else argv[0]
    for flag, value in FAST.get(key, []):
        for i, tok in enumerate(argv):
            if tok == flag:
                if value is not None:
                    argv[i + 1] = value
                break
            if tok.startswith(flag + "="):
                argv[i] = f"{{flag}}={{value}}"
                break
        else:
            argv += [flag] if value is None else [flag, value]
    return argv


argv = fast(sys.argv[1:])
with open(os.environ["PBIP_DOCS_LOG"], "a") as log:
    log.write(json.dumps({{"as_written": sys.argv[1:], "run": argv}}) + "\\n")
from napari_pbip.cli.main import main

sys.exit(main(argv))
'''


# --------------------------------------------------------------------------------------------
# Reading the pages


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    page: str
    lang: str
    line: int  # 1-based line of the opening fence
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ```{self.lang}"


def _split(page: str) -> tuple[list[Block], str]:
    """The fenced code blocks of a Markdown page, in order, and its prose (the page without them)."""
    blocks, prose, current, start, lang, fence = [], [], None, 0, "", ""
    for n, line in enumerate((ROOT / page).read_text().splitlines(), 1):
        stripped = line.strip()
        if current is None:
            m = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*$", stripped)
            if m:
                current, start, fence, lang = [], n, m.group(1), m.group(2).lower()
            else:
                prose.append(line)
        elif stripped.startswith(fence) and stripped.strip("`~") == "":
            blocks.append(Block(page, lang, start, "\n".join(current)))
            current = None
        else:
            current.append(line)
    assert current is None, f"{page}:{start}: code fence never closed"
    return blocks, "\n".join(prose)


def read_blocks(page: str) -> list[Block]:
    """Fenced code blocks of a Markdown page, in order."""
    return _split(page)[0]


def _not_run_reason(block: Block) -> str | None:
    hits = [why for (page, key), why in NOT_RUN.items() if page == block.page and key in block.text]
    assert len(hits) <= 1, f"{block} matches several NOT_RUN entries; make the keys unique"
    return hits[0] if hits else None


def _strip_heredocs(text: str) -> str:
    out, end = [], None
    for line in text.splitlines():
        if end is not None:
            if line.strip() == end:
                end = None
            continue
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if m:
            end = m.group(1)
        out.append(line)
    return "\n".join(out)


_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "|&"}
_PREFIX_WORDS = {"do", "then", "else", "time", "!", "{", "exec", "command"}


def pbip_commands(text: str) -> list[list[str]]:
    """The argument lists of every ``pbip`` invocation in a shell snippet."""
    text = _strip_heredocs(text).replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words: list[str] = []
        for token in [*lex, ";"]:
            if token not in _SEPARATORS:
                words.append(token)
                continue
            while words and (words[0] in _PREFIX_WORDS or re.match(r"^[A-Za-z_]\w*=", words[0])):
                words.pop(0)
            if words and (words[0] == "pbip" or words[0].endswith("/pbip")):
                found.append(words[1:])
            words = []
    return found


def _all_blocks() -> list[Block]:
    return [b for page in PAGES for b in read_blocks(page)]


# --------------------------------------------------------------------------------------------
# 1. the CLI reference


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_parser():
    gen = _gen_cli_docs()
    want = gen.render()
    have = (ROOT / "docs" / "cli.md").read_text()
    assert have == want, "docs/cli.md is out of date: run `python scripts/gen_cli_docs.py` and commit it"


def test_cli_reference_covers_every_command():
    from napari_pbip.cli.main import build_parser

    gen = _gen_cli_docs()
    text = (ROOT / "docs" / "cli.md").read_text()
    paths = [path for path, _, _ in gen.iter_parsers(build_parser())]
    assert len(paths) > 20  # every subcommand, including the bank and data groups
    for path in paths:
        assert f"\n## {' '.join(path)}\n" in text, path
        assert f"usage: {' '.join(path)}" in text, path


# --------------------------------------------------------------------------------------------
# 2. every pbip command in the docs parses


def _parse(argv: list[str]) -> str | None:
    """None when the real parser accepts ``argv``, else its error message."""
    from napari_pbip.cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_pbip_commands_in_the_docs_parse():
    commands = [(b, argv) for b in _all_blocks() if b.lang == "bash" for argv in pbip_commands(b.text)]
    assert len(commands) > 30, "expected the docs to show many pbip commands"
    bad = [f"{b}: pbip {shlex.join(argv)}\n    {msg}" for b, argv in commands if (msg := _parse(argv))]
    assert not bad, "documented pbip commands the parser rejects:\n" + "\n".join(bad)


def test_command_extraction():
    text = 'for s in slides/*.svs; do\n  pbip segment "$s" --model seg --out "${s%.svs}.zarr"\ndone\n'
    text += "PBIP_DEVICE=cpu pbip train \\\n  --dataset d --out r  # comment\npython - <<'EOF'\npbip x\nEOF\n"
    text += "ls && pbip models --json | head"
    assert pbip_commands(text) == [
        ["segment", "$s", "--model", "seg", "--out", "${s%.svs}.zarr"],
        ["train", "--dataset", "d", "--out", "r"],
        ["models", "--json"],
    ]
    assert _parse(["segment", "x.svs", "--model", "m", "--out", "o.zarr", "--chunk", "4096"]) is None
    assert "unrecognized arguments: --no-such-option" in _parse(["models", "--no-such-option"])


# --------------------------------------------------------------------------------------------
# 3. every block is run or listed in NOT_RUN


def test_every_block_is_run_or_listed_with_a_reason():
    blocks = _all_blocks()
    shell = [b for b in blocks if b.lang in SHELL_LANGS]
    assert not shell, "fence shell code as ```bash so the docs test sees it: " + ", ".join(map(str, shell))
    for (page, key), why in NOT_RUN.items():
        hits = [b for b in blocks if b.page == page and b.lang in {"bash", *PYTHON_LANGS} and key in b.text]
        assert len(hits) == 1, f"NOT_RUN entry ({page!r}, {key!r}) matches {len(hits)} blocks, not 1"
        assert why.strip(), f"NOT_RUN entry ({page!r}, {key!r}) needs a reason"
    for page in [*PAGE_INPUTS, *EXPECTED_OUTPUTS]:
        assert page in PAGES, f"PAGE_INPUTS or EXPECTED_OUTPUTS name {page}, which does not exist"
    for page, names in PAGE_INPUTS.items():
        assert set(names) <= set(INPUTS), page


def test_python_blocks_import_what_exists():
    """Python examples compile and every ``from napari_pbip... import x`` names something real."""
    for block in _all_blocks():
        if block.lang not in PYTHON_LANGS:
            continue
        tree = ast.parse(block.text, filename=str(block))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_pbip"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    ), f"{block}: {node.module} has no {alias.name}"


class _Inputs:
    """Builds the tiny inputs of ``INPUTS`` once per session, on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.built: set[str] = set()

    def _pbip(self, *argv: str) -> None:
        from napari_pbip.cli.main import main

        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*argv, "--quiet"] if argv[0] != "segment" else list(argv)) == 0, argv

    def get(self, name: str) -> Path:
        if name not in self.built:
            getattr(self, "_make_" + name.replace(".", "_"))()
            self.built.add(name)
        return self.root / name

    def _make_data(self) -> None:
        self._pbip("data", "synth", "--out", str(self.root / "data"), *_flat(FAST["data synth"]))

    def _make_annotated(self) -> None:
        tmp = self.root / "annotated-src"
        self._pbip(
            "data",
            "synth",
            "--out",
            str(tmp),
            "--n-train",
            "1",
            "--n-val",
            "2",
            "--n-test",
            "1",
            "--size",
            "256",
        )
        out = self.root / "annotated"
        out.mkdir()
        shutil.copytree(tmp / "val" / "img", out / "img")
        shutil.copytree(tmp / "val" / "mask", out / "mask")
        shutil.copy2(tmp / "dataset.json", out / "dataset.json")

    def _make_classes(self) -> None:
        from napari_pbip.data.layouts import open_dataset

        ds = open_dataset(self.get("data"))
        for sample in ds.samples("train"):
            if sum(sample.labels) == 1:
                name = ds.spec.classes[sample.labels.index(1)]
                (self.root / "classes" / name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(sample.image, self.root / "classes" / name / sample.image.name)

    def _make_bank(self) -> None:
        self._pbip(
            "bank",
            "build",
            "--dataset",
            str(self.get("data")),
            "--out",
            str(self.root / "bank"),
            *_flat(FAST["bank build"]),
        )

    def _make_run(self) -> None:
        self._pbip(
            "train",
            "--dataset",
            str(self.get("data")),
            "--bank",
            str(self.get("bank")),
            "--out",
            str(self.root / "run"),
            *_flat(FAST["train"]),
        )

    def _make_masks(self) -> None:
        self._pbip(
            "pseudo",
            "--model",
            str(self.get("run")),
            "--dataset",
            str(self.get("data")),
            "--out",
            str(self.root / "masks"),
        )

    def _make_seg(self) -> None:
        self._pbip(
            "train-seg",
            "--dataset",
            str(self.get("data")),
            "--masks",
            str(self.get("masks")),
            "--out",
            str(self.root / "seg"),
            "--mpp",
            "0.5",
            *_flat(FAST["train-seg"]),
        )

    def _make_slide_svs(self) -> None:
        self._pbip("data", "synth-slide", "--out", str(self.root / "slide.svs"), "--size", "512")

    def _make_slides(self) -> None:
        for i, seed in ((1, 1), (2, 2)):
            out = self.root / "slides" / f"case-0{i}.svs"
            self._pbip(
                "data",
                "synth-slide",
                "--out",
                str(out),
                "--size",
                "512",
                "--seed",
                str(seed),
                "--labels-out",
                str(self.root / f"case-0{i}.labels.tif"),
            )

    def copy_into(self, name: str, dest: Path) -> None:
        src = self.get(name)
        for path in [src, *(src.parent.glob(src.stem + ".labels.tif") if src.is_file() else [])]:
            target = dest / path.name
            shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)


def _flat(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [tok for flag, value in pairs for tok in ([flag] if value is None else [flag, value])]


@pytest.fixture(scope="session")
def doc_inputs(tmp_path_factory) -> _Inputs:
    return _Inputs(tmp_path_factory.mktemp("doc-inputs"))


def _runnable_pages() -> list[str]:
    return [
        page
        for page in PAGES
        if any(b.lang in {"bash", *PYTHON_LANGS} and _not_run_reason(b) is None for b in read_blocks(page))
    ]


@pytest.mark.slow
@pytest.mark.parametrize("page", _runnable_pages())
def test_page_blocks_run(page, doc_inputs, tmp_path):
    """The page's runnable blocks succeed in order, in one working directory."""
    work, bin_dir, log = tmp_path / "work", tmp_path / "bin", tmp_path / "pbip-calls.jsonl"
    work.mkdir()
    bin_dir.mkdir()
    for name in PAGE_INPUTS.get(page, ()):
        doc_inputs.copy_into(name, work)
    shim = bin_dir / "pbip"
    shim.write_text(SHIM.format(python=sys.executable, fast=json.dumps(FAST)))
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PBIP_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PBIP_DOCS_LOG": str(log),
        "COLUMNS": "100",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    ran = 0
    for i, block in enumerate(read_blocks(page)):
        if block.lang not in {"bash", *PYTHON_LANGS} or _not_run_reason(block) is not None:
            continue
        if block.lang == "bash":
            script, cmd = tmp_path / f"block{i}.sh", ["bash", "-euo", "pipefail"]
        else:
            script, cmd = tmp_path / f"block{i}.py", [sys.executable]
        script.write_text(block.text + "\n")
        proc = subprocess.run(
            [*cmd, str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S
        )
        calls = log.read_text() if log.exists() else ""
        assert proc.returncode == 0, (
            f"{block} failed (exit {proc.returncode}):\n{block.text}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-3000:]}\n--- pbip calls\n{calls}"
        )
        ran += 1
    assert ran
    written = [
        (b, argv)
        for b in read_blocks(page)
        if b.lang == "bash" and _not_run_reason(b) is None
        for argv in pbip_commands(b.text)
    ]
    calls = log.read_text().splitlines() if log.exists() else []
    assert len(calls) >= len(written), (
        f"{page}: {len(written)} pbip commands but {len(calls)} ran through the shim"
    )
    missing = [name for name in EXPECTED_OUTPUTS.get(page, ()) if not (work / name).exists()]
    assert not missing, f"{page}: its commands ran but did not write {missing}"


# --------------------------------------------------------------------------------------------
# 4. links, the index, fences


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _split(str(path.relative_to(ROOT)))[1]
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_relative_links_and_images_resolve():
    bad = []
    for page in PAGES:
        path = ROOT / page
        text = re.sub(r"`[^`]*`", "", _split(page)[1])  # links inside inline code do not count
        for m in _LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                bad.append(f"{page}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{page}: {target}: no heading with anchor #{anchor}")
    assert not bad, "\n".join(bad)


def test_index_links_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [
        p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md" and f"({p.name}" not in index
    ]
    assert not missing, f"docs/index.md does not link {missing}"
