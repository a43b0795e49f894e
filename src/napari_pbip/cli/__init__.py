"""The ``pbip`` command line: a thin shell over the library functions."""
