"""PyTorch -> ONNX export, parity, bundle manifest, fine-tuning, gating."""
