"""Data sets: labels in file names, layouts, images and masks, weak tiling (synthetic data: :mod:`napari_pbip.synthetic`)."""
