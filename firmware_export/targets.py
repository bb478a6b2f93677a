"""Imports every export target so that it registers in ``firmware_export.registry.TARGETS``.

One line per target; ``ecqx-export`` imports this module before reading ``TARGETS``.
"""
from firmware_export.fantastic4 import target as _fantastic4  # noqa: F401  (registers "fantastic4")
from firmware_export.registry import TARGETS  # noqa: F401
from firmware_export.tflm import target as _tflm  # noqa: F401  (registers "tflm")

__all__ = ["TARGETS"]
