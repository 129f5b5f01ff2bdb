"""Beep: see and hear the Linux OOM killer."""

__version__ = "0.1.0"
