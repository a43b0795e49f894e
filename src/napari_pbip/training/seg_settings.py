"""Old home of :class:`~napari_pbip.stage2.seg_settings.SegSettings`, kept because the 0.1 docs named it.

Use :mod:`napari_pbip.stage2.seg_settings`. Nothing inside the package imports this module.
"""

import warnings

from ..stage2.seg_settings import SegSettings

__all__ = ["SegSettings"]

warnings.warn(
    "napari_pbip.training.seg_settings moved to napari_pbip.stage2.seg_settings; import from there",
    DeprecationWarning,
    stacklevel=2,
)
