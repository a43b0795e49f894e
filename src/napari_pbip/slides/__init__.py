"""Whole slides: lazy readers with physical resolution, tissue detection, and tiled segmentation (``segment``)."""

from .readers import Slide, SlideSource, open_slide, tiff_kind, tiff_mpp
from .tissue import TissueMask, TissueSettings, detect_tissue

__all__ = [
    "Slide",
    "SlideSource",
    "TissueMask",
    "TissueSettings",
    "detect_tissue",
    "open_slide",
    "tiff_kind",
    "tiff_mpp",
]
