"""What the training of both stages shares: checkpoints, the run log, batch order and augmentation,
and the checks on a trained model folder's ``model.json``.

:mod:`napari_pbip.stage1` and :mod:`napari_pbip.stage2` import from here; nothing here imports
either stage.
"""
