"""The transformer path (issue 4): all-MiniLM-L6-v2 on Rotten Tomatoes, edgequant side by side
with onnxruntime.quantization on the same FP32 ONNX model.

Sentiment accuracy of a logistic-regression head trained once on FP32 embeddings (2,000 train /
1,000 test reviews), embedding cosine to FP32, size, latency ratio to FP32 at batch 1 and 16
(2 threads, medians, all models interleaved in one run) and the time to quantize.

    python benchmarks/bench_transformer.py [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

import edgequant as eq
from _common import machine, write_results_section

SQ = eq.Smoothing.SMOOTHQUANT
EMB = eq.Embeddings.INT8
OURS = [
    ("edgequant dynamic INT8", eq.PTQConfig.dynamic()),
    ("edgequant dynamic INT8 + int8 embeddings", eq.PTQConfig.dynamic(embeddings=EMB)),
    ("edgequant static INT8 (default)", eq.PTQConfig.int8()),
    ("edgequant static INT8 + int8 embeddings", eq.PTQConfig.int8(embeddings=EMB)),
    ("edgequant static INT8 + SmoothQuant", eq.PTQConfig.int8(smoothing=SQ)),
    ("edgequant static INT8, per-tensor weights", eq.PTQConfig.int8(per_channel=False)),
    ("edgequant static INT8, per-tensor + SmoothQuant", eq.PTQConfig.int8(per_channel=False, smoothing=SQ)),
    ("edgequant INT4 weight-only, round to nearest", eq.PTQConfig.int4(block_size=32)),
    ("edgequant INT4 weight-only, GPTQ", eq.PTQConfig.int4(block_size=32, rounding=eq.Rounding.GPTQ)),
]  # fmt: skip


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over the same calibration batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.items = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def ort_models(fp32: eq.Model, calib: list[dict[str, np.ndarray]], folder: Path) -> list:
    """quantize_dynamic (per-channel s8), quantize_static (defaults: QDQ, MinMax) and
    MatMulNBits (4-bit, block 32), as a user of onnxruntime.quantization would run them."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    src = folder / "fp32.onnx"
    fp32.save(src)
    out = []
    t0 = time.perf_counter()
    quantize_dynamic(src, folder / "dyn.onnx", per_channel=True, weight_type=QuantType.QInt8)
    out.append(
        ("ORT quantize_dynamic (per-channel s8)", folder / "dyn.onnx", time.perf_counter() - t0)
    )
    t0 = time.perf_counter()
    quantize_static(src, folder / "static.onnx", _Reader(calib))
    out.append(("ORT quantize_static (defaults)", folder / "static.onnx", time.perf_counter() - t0))
    t0 = time.perf_counter()
    nbits = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True)
    nbits.process()
    nbits.model.save_model_to_file(str(folder / "nbits.onnx"))
    out.append(
        ("ORT MatMulNBits (4-bit, block 32)", folder / "nbits.onnx", time.perf_counter() - t0)
    )
    return [(label, eq.load(path), seconds) for label, path, seconds in out]


def main() -> None:
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizers log every node at INFO
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    from edgequant.zoo import minilm

    fp32 = minilm.minilm_model()
    train, test = minilm.load_reviews()
    head = minilm.train_head(minilm.embed(fp32, train), train.labels)
    reference = minilm.embed(fp32, test)
    calib_batches = [{k: v[i : i + 32] for k, v in train.tokens.items()} for i in range(0, 256, 32)]
    calib = eq.Dataset(calib_batches)
    rows: list[tuple[str, eq.Model, float]] = []
    for label, config in OURS:
        t0 = time.perf_counter()
        needs = config.method is eq.Method.STATIC or config.rounding is eq.Rounding.GPTQ
        q = eq.quantize(fp32, config, calibration=calib if needs else None)
        rows.append((label, q, time.perf_counter() - t0))
        print(label, f"{time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows += ort_models(fp32, calib_batches, Path(tmp))
    models = [fp32]
    for i, (_, q, _) in enumerate(rows):
        q.name = f"m{i}"
        models.append(q)
    bench = {b.name: b for b in eq.benchmark(models, batch_sizes=(1, 16), threads=(2,), rounds=5,
                                                memory=False)}  # fmt: skip
    base = bench[fp32.name]
    fp32_acc = float((head.predict(reference) == test.labels).mean())
    lines = [
        "| model | accuracy % | drop (pts) | embedding cosine | size % of FP32 | latency b1 / b16 x FP32 | quantize s |",
        "|---|---|---|---|---|---|---|",
        f"| FP32 | {100 * fp32_acc:.1f} | - | 1.000 | 100 ({fp32.size_bytes / 2**20:.0f} MB) | 1.00 / 1.00 | - |",
    ]
    for label, q, seconds in rows:
        emb = minilm.embed(q, test)
        acc = float((head.predict(emb) == test.labels).mean())
        b = bench[q.name]
        ratios = [b.at(n, 2).p50_ms / base.at(n, 2).p50_ms for n in (1, 16)]
        lines.append(
            f"| {label} | {100 * acc:.1f} | {100 * (fp32_acc - acc):+.1f} | "
            f"{minilm.cosine(emb, reference):.3f} | {100 * q.size_bytes / fp32.size_bytes:.1f} | "
            f"{ratios[0]:.2f} / {ratios[1]:.2f} | {seconds:.1f} |"
        )
    body = (
        f"Machine: {machine()}. all-MiniLM-L6-v2 (22.7M parameters, 64 tokens), Rotten Tomatoes "
        "2,000 train / 1,000 test reviews, logistic regression on FP32 embeddings; calibration: "
        "256 training reviews for every static and GPTQ variant, ours and ORT's.\n\n"
        + "\n".join(lines)
    )
    print(body)
    if not args.no_readme:
        write_results_section("transformer", body)


if __name__ == "__main__":
    main()
