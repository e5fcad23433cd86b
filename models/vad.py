"""Silero VAD v5/v6 (16 kHz) as a plain nn.Module with the recurrent state as explicit I/O.

The package's TorchScript model keeps its LSTM state and 64-sample context inside the module,
which makes it single-stream and awkward to export.  This rebuild takes both as inputs so the
daemon can batch many streams through one ONNX session and keep per-stream state itself.
Weights come from the package's own TorchScript model ``silero_vad/data/silero_vad.jit``
(silero-vad, MIT): its ``_model`` submodule holds plain tensors that map 1:1 onto this module,
and the rebuild matches it exactly.  The wheel's ``silero_vad_16k.safetensors`` (meant for its
tinygrad port) holds a *different* weight set (probabilities differ by up to 0.58 from the jit
and from the shipped ONNX files), so it is not used.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SIZE = 128
_FILTER_LENGTH = 256
_HOP_LENGTH = 128
_REFLECT_PAD = 64  # right-only reflection pad before the STFT conv, as in the package
_ENCODER = ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))  # (in, out, stride), k=3 p=1


def weights_path() -> Path:
    """Path of the TorchScript model shipped in the silero-vad wheel (the reference weights).

    Found via the import spec, without importing ``silero_vad``: its import calls
    ``torch.set_num_threads(1)`` for the whole process.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package silero-vad is not installed (pip install silero-vad)")
    return Path(spec.origin).parent / "data" / "silero_vad.jit"


def source_info() -> dict[str, str]:
    """Provenance for the bundle manifest."""
    return {
        "package": "silero-vad",
        "version": metadata.version("silero-vad"),
        "license": "MIT",
        "notes": "weights of silero_vad/data/silero_vad.jit (16 kHz model); state/context explicit",
    }


class SileroVad(nn.Module):
    """One 32 ms step of Silero VAD for a batch of independent streams.

    Inputs: ``audio`` [B, 576] = 64 samples of context (tail of the previous chunk, zeros at
    stream start) + the 512-sample chunk, float32 in [-1, 1]; ``state`` [2, B, 128] = LSTM
    (h, c), zeros at stream start.  Outputs: ``prob`` [B] speech probability, ``state_out``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(2 * (_FILTER_LENGTH // 2 + 1), 1, _FILTER_LENGTH))
        self.convs = nn.ModuleList(
            nn.Conv1d(cin, cout, kernel_size=3, stride=s, padding=1) for cin, cout, s in _ENCODER
        )
        # LSTMCell written out as two Linear layers: exports as plain MatMul/Sigmoid/Tanh
        # (no ONNX LSTM op, whose batch-first/state layouts vary across runtimes).
        self.ih = nn.Linear(STATE_SIZE, 4 * STATE_SIZE)
        self.hh = nn.Linear(STATE_SIZE, 4 * STATE_SIZE)
        self.head = nn.Conv1d(STATE_SIZE, 1, kernel_size=1)

    def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.pad(audio.unsqueeze(1), (0, _REFLECT_PAD), mode="reflect")
        spec = F.conv1d(x, self.stft_basis, stride=_HOP_LENGTH)  # [B, 258, 4]
        half = _FILTER_LENGTH // 2 + 1
        real, imag = spec[:, :half], spec[:, half:]
        x = torch.sqrt(real * real + imag * imag)
        for conv in self.convs:
            x = torch.relu(conv(x))
        x = x[:, :, 0]  # [B, 128]: the encoder reduces 4 frames to 1 (not squeeze: no ONNX If)
        h, c = state[0], state[1]
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        prob = torch.sigmoid(self.head(torch.relu(h).unsqueeze(-1)))[:, 0, 0]
        return prob, torch.stack([h, c])


def load_silero_vad(path: Path | None = None) -> SileroVad:
    """Build the module and load the 16 kHz weights from the package's jit file (eval mode)."""
    jit = torch.jit.load(str(path or weights_path()), map_location="cpu")._model
    src = {k: v.detach().clone() for k, v in [*jit.named_parameters(), *jit.named_buffers()]}
    mapped = {
        "stft_basis": src["stft.forward_basis_buffer"],
        "head.weight": src["decoder.decoder.2.weight"],
        "head.bias": src["decoder.decoder.2.bias"],
    }
    for gate in ("ih", "hh"):
        mapped[f"{gate}.weight"] = src[f"decoder.rnn.weight_{gate}"]
        mapped[f"{gate}.bias"] = src[f"decoder.rnn.bias_{gate}"]
    for k in range(len(_ENCODER)):
        for p in ("weight", "bias"):
            mapped[f"convs.{k}.{p}"] = src[f"encoder.{k}.reparam_conv.{p}"]
    model = SileroVad()
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def initial_state(batch: int = 1) -> torch.Tensor:
    """Zero LSTM state for ``batch`` new streams."""
    return torch.zeros(2, batch, STATE_SIZE)
