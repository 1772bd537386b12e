"""TFLite / LiteRT export: full-integer INT8, dynamic-range and FP16 `.tflite` models from the
FP32 PyTorch model, run and checked in the LiteRT interpreter (pip install 'edgequant[tflite]').

Why litert-torch: it is Google's maintained PyTorch -> LiteRT converter (successor of
ai-edge-torch), it declares version ranges our pinned torch satisfies and needs no TensorFlow;
its PT2E quantizer writes TFLite's int8 spec and its converter lowers the Q/DQ graph to integer
kernels with int8 inputs and outputs. Dynamic-range and FP16 use ai-edge-quantizer on the
converted float model (installed with litert-torch). onnx2tf, the ONNX route, pins
onnxruntime 1.23, numpy 1.26 and TensorFlow 2.19 exactly, which cannot install beside this
package's stack; onnx2torch (ONNX -> torch, then litert-torch) needs torchvision, which does not
import beside the pinned CPU torch. So TFLite export starts from the PyTorch model.
"""

from edgequant.tflite.convert import (
    TFLiteMode,
    TFLiteModel,
    load_tflite,
    quantize_tflite,
    to_tflite,
)
from edgequant.tflite.runtime import benchmark_tflite, check_tflite, evaluate_tflite, predict_tflite

__all__ = [
    "TFLiteMode",
    "TFLiteModel",
    "benchmark_tflite",
    "check_tflite",
    "evaluate_tflite",
    "load_tflite",
    "predict_tflite",
    "quantize_tflite",
    "to_tflite",
]
