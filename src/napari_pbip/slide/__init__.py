"""Whole-slide images: lazy readers with physical resolution, and tissue detection."""

from .readers import Slide, SlideSource, open_slide
from .tissue import TissueMask, TissueSettings, detect_tissue

__all__ = ["Slide", "SlideSource", "TissueMask", "TissueSettings", "detect_tissue", "open_slide"]
