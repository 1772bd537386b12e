"""Algorithms that make post-training quantization more accurate: small functions over arrays.

Each module cites its paper and knows nothing about ONNX graphs; `edgequant.ptq` finds where to
apply them and rewrites the graph.
"""
