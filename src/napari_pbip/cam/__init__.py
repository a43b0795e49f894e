"""CAMs -> pseudo-masks (training images, gated by their labels) and predictions (unlabelled images)."""

from .predict import Stage1Predictor, load_stage1_predictor, make_pseudo_masks, predict_folder
from .pseudo import CamSettings

__all__ = ["CamSettings", "Stage1Predictor", "load_stage1_predictor", "make_pseudo_masks", "predict_folder"]
