"""Old home of stage-1 training, kept because the 0.1 docs showed ``from napari_pbip.training import ...``.

Use :mod:`napari_pbip.stage1` (and :mod:`napari_pbip.stage2` for segmenters). Nothing inside the
package imports this module.
"""

import warnings

from ..stage1 import TrainingDivergedError, TrainResult, TrainSettings, resume_settings, train

__all__ = ["TrainResult", "TrainSettings", "TrainingDivergedError", "resume_settings", "train"]

warnings.warn(
    "napari_pbip.training moved to napari_pbip.stage1 (stage 2: napari_pbip.stage2); import from there",
    DeprecationWarning,
    stacklevel=2,
)
