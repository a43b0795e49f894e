"""The embedded offline demo: the whole pipeline on data the package makes itself."""

from .pipeline import DemoResult, DemoSettings, run_demo

__all__ = ["DemoResult", "DemoSettings", "run_demo"]
