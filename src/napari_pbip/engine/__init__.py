"""What both stages share: checkpoints, the run log, batch order and augmentation, dihedral
test-time augmentation (``tta``), and the one reader of a trained model folder's ``model.json``.

:mod:`napari_pbip.stage1` and :mod:`napari_pbip.stage2` import from here; nothing here imports
either stage.
"""
