"""adbflow: share AI compute across Android devices, driven only over adb."""

__version__ = "0.1.0"
