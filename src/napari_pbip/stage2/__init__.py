"""Stage 2: a fully supervised segmenter trained on the stage-1 pseudo-masks, and its predictor.

``seg_train`` trains (on pairs from ``seg_data``, with ``seg_settings``); ``segmenter_predictor``
loads the folder it writes as a dense predictor. Importing this package is cheap; torch is
imported by the functions that need it.
"""

from .seg_settings import SegSettings
from .seg_train import SegResult, resume_seg_settings, train_segmenter
from .segmenter_predictor import load_segmenter_predictor

__all__ = ["SegResult", "SegSettings", "load_segmenter_predictor", "resume_seg_settings", "train_segmenter"]
