"""Whole-slide images: lazy readers with physical resolution, and tissue detection."""

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
