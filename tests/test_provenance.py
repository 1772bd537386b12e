"""The provenance record: every method writes a typed, versioned `.quant.json` that reads back
equal, and a sidecar that is not one (unknown key, wrong type, other version) is refused."""

from __future__ import annotations

import json
import re

import pytest

import edgequant as eq
from edgequant.errors import ConfigError
from edgequant.provenance import (
    PROVENANCE_VERSION,
    Provenance,
    SupportBrief,
    TrainingRun,
    TuneTrial,
    read_provenance,
)


@pytest.mark.parametrize(
    "config",
    [eq.PTQConfig.int8(), eq.PTQConfig.dynamic(), eq.PTQConfig.fp16(), eq.PTQConfig.int4()],
    ids=lambda c: c.method.value,
)
def test_every_method_writes_a_record_that_reads_back_equal(
    config, fp32_model, calibration, tmp_path
) -> None:
    q = eq.quantize(fp32_model, config, calibration=calibration)
    q.provenance.support = eq.check_support(q, config).brief()
    path = q.save(tmp_path / "q.onnx")
    back = read_provenance(path)
    assert back == q.provenance
    assert back.method == config.method.value and back.config == config
    assert back.source_sha256 and back.edgequant == eq.__version__
    data = json.loads((tmp_path / "q.quant.json").read_text())
    assert data["provenance_version"] == PROVENANCE_VERSION


def test_qat_and_workflow_records_round_trip() -> None:
    """A QAT model's record (QATConfig inside) and every nested record survive JSON."""
    record = Provenance(
        method="qat",
        config=eq.QATConfig.w4a8(ranges=eq.RangeLearning.FROZEN, overrides=(("stem", 8),)),
        float_layers={"head": "not a Conv/Linear"},
        folded_activations=["/stem/Relu"],
        support=SupportBrief("x86-vnni", "onnxruntime-cpu", "integer", "all", 1.0, 3, {}),
        tune=TuneTrial(4, 0.31),
        training=TrainingRun("task.py:make", 300, 1e-4, 0, 2),
    )
    assert Provenance.from_dict(json.loads(record.to_json())) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provenance_version": 99}, "provenance version 99"),
        ({"provenance_version": None}, "provenance version None"),
        ({"colour": "blue"}, "unknown provenance keys ['colour']"),
        ({"quantized_nodes": "many"}, "'quantized_nodes' has the wrong type (str)"),
        ({"float_nodes": {"a": 3}}, "'float_nodes' has the wrong type"),
        ({"tune": {"trial": 1}}, "'tune' needs exactly the keys"),
        ({"config": {"method": "static", "percentile": "high"}}, "percentile"),
        ({"method": 3}, "needs its method"),
    ],
)
def test_a_sidecar_that_is_not_a_record_is_refused(change, message, tmp_path) -> None:
    data = Provenance(method="static", config=eq.PTQConfig.int8(), quantized_nodes=3).to_dict()
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None or k != "provenance_version"}
    (tmp_path / "m.quant.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_provenance(tmp_path / "m.onnx")
