"""napari-pbip: PBIP weakly supervised tissue segmentation for whole-slide images.

The core (everything outside ``_widgets``) imports without Qt or napari, and torch is
imported inside the functions that need it, so ``import napari_pbip`` stays cheap.
"""

__version__ = "0.1.0"
