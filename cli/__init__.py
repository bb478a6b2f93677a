"""The command-line tools, the top layer of the project: each module is one console script.

=================  ======================  ==============================================
command            module                  what it does
=================  ======================  ==============================================
``ecqx-train``     :mod:`cli.train`        train a zoo model in float on a data set
``ecqx-quantize``  :mod:`cli.quantize`     ECQ/ECQx quantization-aware training
``ecqx-compress``  :mod:`cli.compress`     any registered compression method
``ecqx-export``    :mod:`cli.export`       export to a target (``tflm``, ``fantastic4``)
``ecqx-simulate``  :mod:`cli.export`        re-check an export folder on the host
=================  ======================  ==============================================

:mod:`cli.common` holds what every command shares (quiet TensorFlow, exit codes, the parser).
Only this layer (with ``pipeline/`` and ``bench/``) combines the data sets (``models``), the
quantization (``ecqx_tf``) and the exporters (``firmware_export``); see ``tests/test_layering.py``.
"""

__all__ = ["common", "compress", "export", "quantize", "train"]
