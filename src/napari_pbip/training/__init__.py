"""Stage 1: ClassNet + ImgMatchNet training (and the plain-CAM baseline), checkpoints, losses.

Importing this package is cheap; torch is imported by the functions that need it.
"""

from .loop import TrainingDivergedError, TrainResult, resume_settings, train
from .settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "TrainingDivergedError", "resume_settings", "train"]
