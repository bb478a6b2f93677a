"""TensorFlow Lite Micro export: convert (exact integers) -> compress (LUT) -> arena -> C arrays,
with a reference-kernel simulator and a host check against the real TFLM interpreter.

Submodules are imported lazily by their users (TensorFlow is heavy); the target registers itself
from ``firmware_export.targets``.
"""
__all__ = ["convert", "flatbuffer", "fbwrite", "compress", "arena", "c_arrays", "simulate", "fixedpoint", "differential",
           "target"]
