"""Old home of :func:`~napari_pbip.slides.segment.segment_slide`, kept because the 0.1 docs named it.

Use :mod:`napari_pbip.slides.segment`. Nothing inside the package imports this module.
"""

import warnings

from ..slides.segment import SegmentResult, SegmentSettings, segment_slide

__all__ = ["SegmentResult", "SegmentSettings", "segment_slide"]

warnings.warn(
    "napari_pbip.inference.segment moved to napari_pbip.slides.segment; import from there",
    DeprecationWarning,
    stacklevel=2,
)
