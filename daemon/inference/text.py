"""Text encoder at run time: the shipped tokenizer.json + the exported MiniLM graph.

It is also how the daemon embeds event prompts declared in config.yaml, so users add events
by writing a sentence: no PyTorch and no training on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from perceptd.daemon.inference.session import SessionOptions, create_session, run

MAX_TOKENS = 128


class TextModel:
    """list[str] -> [N,384] L2-normalised embeddings in the shared space."""

    def __init__(self, onnx_path: Path, tokenizer_path: Path, opts: SessionOptions | None = None,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.session = create_session(onnx_path, opts)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer.encode_batch(texts)
        t = max(len(e.ids) for e in enc)
        ids = np.zeros((len(texts), t), np.int64)
        mask = np.zeros((len(texts), t), np.int64)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), np.float32)
        out = []
        for i in range(0, len(texts), batch):
            ids, mask = self.tokenize(texts[i : i + batch])
            out.append(run(self.session, {"input_ids": ids, "attention_mask": mask})["embed"])
        return np.concatenate(out).astype(np.float32)
