"""Training from the GUI must not crash napari when the OpenGL driver has loaded its own LLVM."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui

SCRIPT = """
import numpy as np, napari
viewer = napari.Viewer(show=True)
viewer.add_image(np.zeros((8, 8)))
viewer.screenshot(canvas_only=True)  # the canvas has drawn: the GL driver is loaded
from napari_pbip._widgets._triton_guard import guard_triton, llvm_loaded
print("llvm", llvm_loaded(), "blocked", guard_triton(), flush=True)
import torch
model = torch.nn.Linear(3, 3)
optimizer = torch.optim.AdamW(model.parameters())  # imports torch._dynamo, which looks for Triton
model(torch.zeros(1, 3)).sum().backward()
optimizer.step()
print("trained", flush=True)
viewer.close()
"""


def test_an_optimizer_can_be_built_after_the_viewer_has_drawn():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained" in out.stdout
    if "llvm True" in out.stdout:
        assert "blocked True" in out.stdout
