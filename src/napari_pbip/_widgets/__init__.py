"""Everything that touches Qt or napari: reader, sample data, writers and the dock widgets.

The rest of the package imports without Qt; these modules own core objects and call the same
functions the CLI calls. :func:`show_demo` is the one entry the CLI uses (``pbip demo --view``).
"""

from .demo_view import show_demo

__all__ = ["show_demo"]
