"""Report sections about targets, rendering only: the per-target table of what
`edgequant.workflows.targets.quantize_for_targets` measured, and operator support per model."""

from __future__ import annotations

from typing import Any

from edgequant.analysis.support import check_support
from edgequant.config import Target
from edgequant.model import Model
from edgequant.report.write import Section
from edgequant.targets import preset
from edgequant.workflows.targets import TargetsRun


def target_section(result: TargetsRun) -> Section:
    """The per-target table of `edgequant.workflows.targets.quantize_for_targets`."""
    rows, data = [], []
    for r in result.runs:
        own = r.support
        cpu = (
            "-" if r.cpu_support is None
            else f"{100 * r.cpu_support.integer_fraction:.0f}% ({len(r.cpu_support.float_nodes)} float)"
        )  # fmt: skip
        rows.append(
            f"| {r.target} | {own.runtime} | {100 * r.top1:.2f} | "
            f"{100 * own.integer_fraction:.0f}% ({len(own.float_nodes)} float) | {cpu} | "
            f"{r.size_bytes / 1024:.0f} | {r.latency_ratio:.2f} ({r.latency_baseline}) | "
            f"{'-' if r.openvino_ratio is None else f'{r.openvino_ratio:.2f}'} |"
        )
        entry: dict[str, Any] = {"target": r.target, "top1": r.top1}
        if r.fp32_top1 is not None:
            entry["fp32_top1"] = r.fp32_top1
        entry["support"] = own.to_dict()
        if r.cpu_support is not None:
            entry["cpu_integer_fraction"] = r.cpu_support.integer_fraction
        entry["latency_ratio_b1_t1"] = r.latency_ratio
        if r.openvino_ratio is not None:
            entry["openvino_latency_ratio_b1_t1"] = r.openvino_ratio
        data.append(entry)
    header = (
        "| target | runtime | top-1 % | integer MACs on its runtime | integer MACs on this CPU "
        f"({result.here.value}) | size KB | latency b1 x FP32 | OpenVINO CPU b1 x FP32 |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    notes = [
        "Integer MACs: share of the multiply-accumulates in nodes that run in integer "
        "(`edgequant check`); ONNX Runtime CPU targets are checked on ORT's own fused graph, QNN "
        "and TensorRT on QDQ node units, TFLite on its operators' tensor types.",
        "QNN and TensorRT are not installed here: their latency is ORT CPU running their model.",
        "OpenVINO CPU: the x86 presets' files in OpenVINO (the openvino extra), a second runtime "
        "for this CPU, against FP32 in OpenVINO.",
        *result.notes,
    ]
    return Section("Deployment targets", header + "\n" + "\n".join(rows), notes, data)


def support_section(models: list[tuple[str, Model]], target: Target | None = None) -> Section:
    """Operator support of each model on `target` (default: this CPU), one row per model."""
    target = target or Target.detect()
    rows, data = [], []
    for name, model in models:
        report = check_support(model, target)
        floats = ", ".join(f"{n.name} ({n.op_type})" for n in report.float_nodes[:3])
        more = f" and {len(report.float_nodes) - 3} more" if len(report.float_nodes) > 3 else ""
        rows.append(
            f"| {name} | {len(report.nodes) - len(report.float_nodes)}/{len(report.nodes)} | "
            f"{100 * report.integer_fraction:.0f}% | {floats + more or '-'} |"
        )
        data.append({"model": name, **report.brief().to_dict()})
    header = "| model | integer nodes | integer MACs | float nodes |\n|---|---|---|---|"
    note = (
        f"Checked on {target.value} ({preset(target).runtime.value}) with `edgequant check`: "
        "ONNX Runtime's own fused graph says which nodes run in integer."
    )
    return Section(
        f"Operator support on {target.value}", header + "\n" + "\n".join(rows), [note], data
    )
