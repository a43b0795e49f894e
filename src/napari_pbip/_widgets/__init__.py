"""Everything that touches Qt or napari: reader, sample data, writers and the dock widgets.

The rest of the package imports without Qt; these modules own core objects and call the same
functions the CLI calls.
"""
