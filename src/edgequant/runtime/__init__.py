"""ONNX Runtime: sessions, evaluation and benchmarks. Every figure edgequant reports comes from here."""
