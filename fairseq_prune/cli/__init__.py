"""Command lines (thin): export, infer, ONNX, latency profile, and the launcher of fairseq's infer.py."""
