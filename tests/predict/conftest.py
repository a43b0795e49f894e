"""Make the shared test helpers (tests/slides/pbip_toy.py) importable from this folder's tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slides"))
