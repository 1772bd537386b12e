"""Models built to reproduce structures real models from other teams have (issue 14): a
stateful voice-activity detector with LSTMs inside `If` branches, a scalar sample-rate input and
a state shaped (layers x 2, batch, hidden). Exported by torch as users export theirs."""

from __future__ import annotations

import warnings
import wave
from pathlib import Path

import numpy as np
import torch
from torch import nn


class _Branch(nn.Module):
    def __init__(self, window: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 16, window, stride=window // 2)
        self.lstm = nn.LSTM(16, 32)
        self.head = nn.Linear(32, 1)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv(x.unsqueeze(1)))  # (B, 16, T)
        y, (h2, c2) = self.lstm(f.permute(2, 0, 1), (h, c))
        return torch.sigmoid(self.head(y[-1])), h2, c2


class VoiceActivity(nn.Module):
    """(chunk (B, samples), state (2, B, 32), sr scalar) -> (speech probability (B, 1), state):
    one branch per sample rate, chosen by an `If` on the scalar input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = nn.Linear(512, 512)  # outside the branches: dynamic and INT4 quantize it
        self.at16k = _Branch(32)
        self.at8k = _Branch(16)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state[0:1], state[1:2]
        x = self.pre(x)
        if int(sr) == 16000:
            p, h2, c2 = self.at16k(x, h, c)
        else:
            p, h2, c2 = self.at8k(x, h, c)
        return p, torch.cat([h2, c2])


def export_voice_activity(
    path: Path, *, symbolic_state: bool = True, module: VoiceActivity | None = None
) -> Path:
    """The scripted model (untrained unless `module` is given) as ONNX (opset 17, `If` with the
    LSTMs in its branches). With `symbolic_state=False` the state is exported fixed at batch 1,
    as streaming models are."""
    example = (torch.randn(1, 512), torch.zeros(2, 1, 32), torch.tensor(16000))
    axes = {"input": {0: "batch", 1: "samples"}, "prob": {0: "batch"}}
    if symbolic_state:
        axes.update({"state": {1: "batch"}, "stateN": {1: "batch"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated; such models still ship
        module = torch.jit.script((module or VoiceActivity()).eval())
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=17,
            input_names=["input", "state", "sr"], output_names=["prob", "stateN"],
            dynamic_axes=axes,
        )  # fmt: skip
    return path


SPEECH = Path("/usr/share/pocketsphinx/test/data")


def speech_chunks(count: int, samples: int = 16000) -> np.ndarray:
    """Real 16 kHz speech (pocketsphinx-testdata, Debian), 16-bit values as float32, in
    one-second chunks with a hop of a quarter second: (count, samples)."""
    clips = [np.fromfile(f, dtype="<i2") for f in sorted(SPEECH.rglob("*.raw"))]
    for path in sorted(SPEECH.rglob("*.wav")):
        with wave.open(str(path)) as w:
            if w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1:
                clips.append(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"))
    audio = np.concatenate(clips).astype(np.float32)
    hop = samples // 4
    starts = range(0, len(audio) - samples, hop)
    return np.stack([audio[s : s + samples] for s in list(starts)[:count]])


CHUNK = 512  # samples per streaming step (32 ms at 16 kHz), as the voice-activity model takes


def speech_streams() -> dict[str, np.ndarray]:
    """Every 16 kHz clip of pocketsphinx-testdata as streaming steps: name -> (steps, CHUNK)
    audio scaled to [-1, 1)."""
    streams = {}
    for path in sorted(SPEECH.rglob("*.raw")) + sorted(SPEECH.rglob("*.wav")):
        if path.suffix == ".raw":
            audio = np.fromfile(path, dtype="<i2")
        else:
            with wave.open(str(path)) as w:
                audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        steps = len(audio) // CHUNK
        name = str(path.relative_to(SPEECH))
        streams[name] = (audio[: steps * CHUNK].reshape(steps, CHUNK) / 32768).astype(np.float32)
    return streams


def voice_labels(steps: np.ndarray) -> np.ndarray:
    """Energy labels for one clip's steps: speech where a step's log energy is 10 dB above the
    clip's quietest tenth (a classic energy VAD; the network learns it from the waveform)."""
    energy = 10 * np.log10((steps.astype(np.float64) ** 2).mean(axis=1) + 1e-10)
    return (energy > np.percentile(energy, 10) + 10).astype(np.float32)


def train_voice_activity(streams: dict[str, np.ndarray], epochs: int = 30) -> VoiceActivity:
    """The 16 kHz branch trained on real speech: each clip streamed in windows of 16 steps
    (truncated backpropagation through time, the state carried within a window)."""
    torch.manual_seed(0)
    model = VoiceActivity()
    windows = []
    for steps in streams.values():
        labels = voice_labels(steps)
        for s in range(0, len(steps) - 16 + 1, 8):
            windows.append((steps[s : s + 16], labels[s : s + 16]))
    x = torch.from_numpy(np.stack([w[0] for w in windows]))  # (W, 16, CHUNK)
    y = torch.from_numpy(np.stack([w[1] for w in windows]))  # (W, 16)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(32):
            h = c = torch.zeros(1, len(batch), 32)
            loss = torch.zeros(())
            for t in range(16):
                p, h, c = model.at16k(model.pre(x[batch, t]), h, c)
                loss = loss + nn.functional.binary_cross_entropy(p[:, 0], y[batch, t])
            optimiser.zero_grad()
            (loss / 16).backward()
            optimiser.step()
    return model.eval()


class KeywordFrontEnd(nn.Module):
    """A keyword-spotting model with its front end inside: framing by a Conv1d of cosine
    filters, power (y * y, up to ~1e12 on 16-bit audio), a mel-like filterbank, log, then a
    small CNN head. Its power tensor cannot go on an 8-bit grid."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.frames = nn.Conv1d(1, 64, 400, stride=160, bias=False)
        t = torch.arange(400, dtype=torch.float32)
        freqs = torch.arange(1, 65, dtype=torch.float32)[:, None]
        window = 0.5 - 0.5 * torch.cos(2 * torch.pi * t / 400)
        self.frames.weight.data = (torch.cos(2 * torch.pi * freqs * t / 800) * window)[:, None, :]
        self.mel = nn.Linear(64, 40, bias=False)
        self.mel.weight.data = torch.rand(40, 64) * (torch.rand(40, 64) > 0.8)
        self.head = nn.Sequential(
            nn.Conv1d(40, 32, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(32, 12),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        y = self.frames(audio.unsqueeze(1))  # (B, 64, T)
        power = y * y
        mel = self.mel(power.transpose(1, 2))  # (B, T, 40)
        return self.head(torch.log(mel + 1e-6).transpose(1, 2))


def hard_swish(x: torch.Tensor) -> torch.Tensor:
    """x * relu6(x + 3) / 6 written out, as many exported mobile models have it (an Add and a
    Mul with constant operands and a Div by a constant around every activation)."""
    return x * torch.clamp(x + 3, 0, 6) / 6


class HardSwishCNN(nn.Module):
    """A mobile-style CNN whose activations are hard-swish written out."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
             nn.Conv2d(32, 64, 3, stride=2, padding=1)]
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = hard_swish(conv(x))
        return self.head(x.mean(dim=(2, 3)))


class ConvAttentionNet(nn.Module):
    """Conv stages then a self-attention block, as text-line recognisers and hybrid vision
    models are built: the attention makes the graph transformer-like (coverage: weighted)
    while most of the compute is in the convs."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.qkv = nn.Linear(64, 192)
        self.out = nn.Linear(64, 64)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x).flatten(2).transpose(1, 2)  # (B, 49, 64): positions as a sequence
        q, k, v = self.qkv(y).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / 8.0, dim=-1)  # (B, 49, 49)
        y = self.norm(y + self.out(weights @ v))
        return self.head(y.mean(dim=1))


def train_classifier(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 2, lr: float = 2e-3
) -> nn.Module:
    """Short training on real images (N, 1, 28, 28): enough for meaningful decisions."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


class ConvBiLSTM(nn.Module):
    """A CRNN-style recogniser: conv features over an image's columns, read as a sequence by a
    bidirectional LSTM (as text-line recognisers are built), classified from its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)),
        )  # fmt: skip
        self.lstm = nn.LSTM(32 * 7, 64, bidirectional=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.convs(x)  # (B, 32, 7, 28): 28 columns
        seq = f.flatten(1, 2).permute(2, 0, 1)  # (28, B, 224)
        y, _ = self.lstm(seq)
        return self.head(y.mean(dim=0))
