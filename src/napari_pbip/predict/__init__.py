"""Any trained model folder as a dense predictor: the loader registry (``predictor``), tiles blended
into one label map (``tiled``), and masks for a folder of images with either stage (``images``).

Slide inference (:mod:`napari_pbip.slides.segment`) builds on these.
"""
