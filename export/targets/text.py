"""Export target for the MiniLM text encoder."""

from __future__ import annotations

from perceptd.export.target import FEATURE_TOL, ExportContext, ExportTarget
from perceptd.models.text import MAX_TOKENS, TorchTextEmbedder, source_info, tokenizer_path

PARITY_SENTENCES = [
    "turn on the kitchen lights",
    "switch the lamp on",
    "what a lovely song, play it again",
    "take me to the nearest gas station",
    "the dog is barking in the garden",
    "a",
    "Is there anybody at the front door? I think I heard the doorbell ring twice.",
]


def targets(ctx: ExportContext) -> list[ExportTarget]:
    emb = TorchTextEmbedder()
    parity = [tuple(t.numpy() for t in emb.tokenize([s])) for s in PARITY_SENTENCES]
    parity.append(tuple(t.numpy() for t in emb.tokenize(PARITY_SENTENCES)))  # padded batch
    ids, mask = emb.tokenize(PARITY_SENTENCES[:2])
    return [
        ExportTarget(
            name="text",
            module=emb.model,
            example_inputs=(ids, mask),
            input_names=["input_ids", "attention_mask"],
            output_names=["embed"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embed": {0: "batch"},
            },
            parity_inputs=parity,
            tolerances={"embed": FEATURE_TOL},
            preprocessing={
                "tokenizer": "text_tokenizer.json",
                "max_tokens": MAX_TOKENS,
                "pad_id": 0,
                "pooling": "mean over attention_mask, L2 normalised",
                "dim": 384,
            },
            source=source_info(),
            extra_files={"text_tokenizer.json": tokenizer_path().read_bytes()},
        )
    ]


