"""Stage 1: ClassNet + ImgMatchNet training (and the plain-CAM baseline), then its CAMs as masks.

Training (``loop``, with ``classnet``, ``matching``, ``losses``) writes a run folder
(``run_folder``); ``calibrate`` fits its presence thresholds (``presence``); ``predict`` turns its
CAMs into pseudo-masks for training images and masks for unlabelled ones (``pseudo``,
``background``).

Importing this package is cheap; torch is imported by the functions that need it.
"""

from .loop import TrainingDivergedError, TrainResult, resume_settings, train
from .predict import (
    Stage1Predictor,
    load_stage1_predictor,
    make_pseudo_masks,
    predict_folder,
    pseudo_masks_current,
)
from .pseudo import CamSettings
from .settings import TrainSettings

__all__ = [
    "CamSettings",
    "Stage1Predictor",
    "TrainResult",
    "TrainSettings",
    "TrainingDivergedError",
    "load_stage1_predictor",
    "make_pseudo_masks",
    "predict_folder",
    "pseudo_masks_current",
    "resume_settings",
    "train",
]
