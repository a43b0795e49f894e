"""Synthetic data made by the package itself: H&E-like patch data sets and whole slides, for tests and the demo.

``synth`` writes patch data sets, ``synth_slide`` pyramidal slides with ground truth; both paint
tissue with ``render`` (a Beer-Lambert stain model) from the position-consistent noise in ``texture``.
"""
