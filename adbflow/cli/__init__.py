"""The command line: one module per command group (inventory, pipeline, simulate, fleet),
registered on the root app by `main`. The top layer: nothing below imports it."""
from adbflow.cli.main import app, main

__all__ = ["app", "main"]
