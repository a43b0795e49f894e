"""Keep Triton from being imported into a napari process whose OpenGL driver has loaded LLVM.

Mesa's software and AMD OpenGL drivers (llvmpipe under Xvfb, in VMs and remote desktops; radeonsi)
load the system ``libLLVM``. Importing Triton afterwards, which carries its own LLVM, crashes the
process with a segmentation fault (seen here: napari viewer up, then ``import triton``). Torch
imports Triton lazily, e.g. the first time an optimizer is built (``torch._dynamo`` checks for it),
so starting training from the GUI would kill napari.

napari-pbip does not use ``torch.compile`` or Triton kernels. When ``libLLVM`` is already mapped
into the process and Triton is not, :func:`guard_triton` marks Triton as unavailable
(``sys.modules["triton"] = None``), so torch's ``import triton`` raises ImportError, which torch
treats as "Triton not installed".
"""

from __future__ import annotations

import sys
from pathlib import Path


def llvm_loaded() -> bool:
    """True when a system ``libLLVM`` is mapped into this process (Linux only; False elsewhere)."""
    try:
        return "libLLVM" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def guard_triton() -> bool:
    """Block later Triton imports when they would crash the process; True when blocked."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is None
    if llvm_loaded():
        sys.modules["triton"] = None
        return True
    return False
