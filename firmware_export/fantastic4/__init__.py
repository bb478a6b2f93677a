"""FantastIC4-style 4-bit sparse MLP export: the integer network (``network``), the blob format
(``format``, spec in ``FORMAT.md``), the bit-exact simulator (``simulate``), the portable C99
runtime (``runtime/``) and the ``fantastic4`` export target (``target``, imported by
``firmware_export.targets``)."""
from firmware_export.fantastic4.format import FormatError, blob_to_network, read_blob, write_blob
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP

__all__ = ["FormatError", "IntegerDense", "IntegerMLP", "blob_to_network", "read_blob", "write_blob"]
