"""The end-to-end job (float training -> ECQx -> TFLM and FantastIC4 exports -> host checks)."""
