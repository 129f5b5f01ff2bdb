"""Fixtures (filled in by the issue that needs them)."""
