"""The ONNX-graph layer: index of producers and consumers, operator rules, clean-up passes,
rewrites shared by the methods, and MAC counting. Knows nothing about quantization parameters."""
