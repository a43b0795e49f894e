"""Old home of slide inference, kept because the 0.1 docs showed ``napari_pbip.inference.segment``.

Use :mod:`napari_pbip.slides.segment` (whole slides) and :mod:`napari_pbip.predict` (model folders,
image folders). Nothing inside the package imports this package.
"""
