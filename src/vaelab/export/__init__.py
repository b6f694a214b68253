"""Models that leave vaelab: ONNX files of the encoder and decoder, and shareable bundles.

`onnx_files.export_onnx` writes and checks the ONNX files (it needs the `export` extra: onnx,
onnxruntime, onnxscript); `model_card` writes a bundle's README.md. `vaelab pack` (cli/pack.py)
puts a bundle together; reading one back is `vaelab.bundles`, which needs neither.
"""
