"""ONNX: export of a compact model, the metadata it carries, and the onnxruntime inference backend."""
