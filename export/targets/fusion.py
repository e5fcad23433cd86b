"""Export target for the fusion head (plus the text background it is calibrated against)."""

from __future__ import annotations

import io
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from perceptd.export.background import BACKGROUND_SENTENCES
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models.fusion_head import (
    DIM,
    MODALITIES,
    N_AUDIO_CLASSES,
    N_VISION_CLASSES,
    FusionHead,
    load_fusion_head,
)
from perceptd.models.vision import imagenet_relevance_texts

FACE_ANCHOR_TEXT = "a person's face"
INPUTS = [
    "x", "mask", "probs_vision", "probs_audio", "text_evidence", "queries", "prompt_mask",
    "allowed", "calib", "event_affine", "competes", "margin", "required", "rel_vision",
    "rel_audio", "coverage", "from_matcher", "combine",
]
# the per-row inputs (one row per fused observation); the rest are per-vocabulary constants
ROW_INPUTS = ("x", "mask", "probs_vision", "probs_audio", "text_evidence")
ONTOLOGY_FILE = Path(__file__).resolve().parents[2] / "models" / "data" / "audioset_ontology.json"
HIERARCHY_FILE = "audio_hierarchy.json"
VISION_NAMES_FILE = "vision_class_names.npy"
VISION_KINDS_FILE = "vision_class_kinds.npy"
OUTPUTS = ["scores", "weights", "modality_scores", "fused"]
HEAD_STATE_FILE = "fusion_head.npz"


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def _parity_inputs(ctx: ExportContext) -> list[tuple[np.ndarray, ...]]:
    """Real sentence embeddings as modality vectors and real prompts as queries."""
    prompts = [["turn on the lights", "switch the lamp on"], ["play some music", "play a song"],
               ["a cat", "a kitten is here"]]
    q = np.stack([ctx.embed_texts(p) for p in prompts])  # [E,2,D]
    x_text = ctx.embed_texts(["please switch on the light", "what a lovely song", "the cat sleeps",
                              "good morning"])
    m = len(MODALITIES)
    x = np.stack([x_text, x_text[::-1]])  # [2,M,D]
    mask = np.array([[1, 0, 1, 1], [0, 1, 0, 1]], np.float32)
    pm = np.array([[1, 1], [1, 1], [1, 0]], np.float32)
    allowed = np.ones((3, m), np.float32)
    allowed[2, 3] = 0
    calib = np.stack([np.full((3, m), 0.1), np.full((3, m), 0.08)], -1).astype(np.float32)
    aff = np.array([[1, 0], [1.2, 0.3], [0.9, -0.2]], np.float32)
    competes = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)
    required = np.zeros((3, m), np.float32)
    required[0, 3] = required[1, 3] = 1
    margin = np.array([0.5, 0.5, 0.0], np.float32)
    rng = np.random.default_rng(0)
    pv = rng.dirichlet(np.full(N_VISION_CLASSES, 0.05), 2).astype(np.float32)
    pa = rng.uniform(0, 1, (2, N_AUDIO_CLASSES)).astype(np.float32) ** 4
    pa[1] = 0  # a row without audio probabilities (old samples): neutral class evidence
    rel_v = (rng.uniform(0, 1, (3, N_VISION_CLASSES)) > 0.99).astype(np.float32)
    rel_a = (rng.uniform(0, 1, (3, N_AUDIO_CLASSES)) > 0.98).astype(np.float32)
    coverage = np.zeros((3, m), np.float32)
    coverage[:, 0], coverage[:, 2] = [1.0, 0.5, 0.0], [0.0, 1.0, 0.8]
    text_ev = np.array([[2.0, -3.0, 0.0], [-1.0, 4.0, 0.0]], np.float32)
    from_matcher = np.array([1, 1, 0], np.float32)
    combine = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    return [(x.astype(np.float32), mask, pv, pa, text_ev, q.astype(np.float32), pm, allowed, calib,
             aff, competes, margin, required, rel_v, rel_a, coverage, from_matcher, combine)]


def _hierarchy_json() -> bytes:
    """AudioSet parent -> children by name (CC BY-SA 4.0 ontology): class relevance uses it to
    spread an event to the children of its classes and to leave out their generic ancestors."""
    return ONTOLOGY_FILE.read_bytes()


def _state_npz(head: FusionHead) -> bytes:
    """The head's weights beside its ONNX file, so a later retrain starts from them."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in head.state_dict().items()})
    return buf.getvalue()


def _calibration_json(calibration: dict[str, list[float]] | None) -> bytes:
    """Per-event (k, b) read by the daemon (daemon/fusion/space.py); {} = untrained (1, 0)."""
    table = {name: [float(k), float(b)] for name, (k, b) in sorted((calibration or {}).items())}
    return json.dumps(table, indent=1).encode()


def targets(ctx: ExportContext, head_state: dict | None = None,
            calibration: dict[str, list[float]] | None = None) -> list[ExportTarget]:
    head: FusionHead = load_fusion_head(head_state)
    parity = _parity_inputs(ctx)
    example = tuple(torch.from_numpy(a) for a in parity[0])
    background = ctx.embed_texts(BACKGROUND_SENTENCES)
    # plain class names ("a photo of a tabby cat"): crisper than the descriptive class texts
    # for deciding which classes mean an event (daemon/fusion/relevance.py averages both)
    names, kinds = imagenet_relevance_texts()
    vision_names, vision_kinds = ctx.embed_texts(names), ctx.embed_texts(kinds)
    anchor = ctx.embed_texts([FACE_ANCHOR_TEXT])[0]
    return [
        ExportTarget(
            name="fusion",
            module=head,
            example_inputs=example,
            input_names=INPUTS,
            output_names=OUTPUTS,
            dynamic_axes={
                "x": {0: "batch"}, "mask": {0: "batch"},
                "queries": {0: "events", 1: "prompts"}, "prompt_mask": {0: "events", 1: "prompts"},
                "allowed": {0: "events"}, "calib": {0: "events"}, "event_affine": {0: "events"},
                "competes": {0: "events", 1: "events2"},
                "margin": {0: "events"}, "required": {0: "events"},
                "probs_vision": {0: "batch"}, "probs_audio": {0: "batch"},
                "text_evidence": {0: "batch", 1: "events"}, "rel_vision": {0: "events"},
                "rel_audio": {0: "events"}, "coverage": {0: "events"},
                "from_matcher": {0: "events"}, "combine": {0: "events"},
                "scores": {0: "batch", 1: "events"}, "weights": {0: "batch", 1: "events"},
                "modality_scores": {0: "batch", 1: "events"}, "fused": {0: "batch", 1: "events"},
            },
            parity_inputs=parity,
            tolerances={"scores": PROB_TOL, "weights": PROB_TOL, "modality_scores": PROB_TOL,
                        "fused": FEATURE_TOL},
            preprocessing={
                "modalities": list(MODALITIES),
                "dim": DIM,
                "background": {"text": "background_text.npy",
                               "vision": "vision_class_embeddings.npy",
                               "audio": "audio_class_embeddings.npy"},
                "face_anchor": "face_anchor.npy",
                "face_anchor_text": FACE_ANCHOR_TEXT,
                "min_sigma": 0.02,
                "audio_hierarchy": HIERARCHY_FILE,
                "vision_class_names": VISION_NAMES_FILE,
                "vision_class_kinds": VISION_KINDS_FILE,
                "row_inputs": list(ROW_INPUTS),
            },
            source={"package": "perceptd", "version": metadata.version("perceptd"),
                    "license": "Apache-2.0", "notes": "fusion head defined in models/fusion_head.py"},
            extra_files={"background_text.npy": _npy(background), "face_anchor.npy": _npy(anchor),
                         "calibration.json": _calibration_json(calibration),
                         HIERARCHY_FILE: _hierarchy_json(),
                         VISION_NAMES_FILE: _npy(vision_names),
                         VISION_KINDS_FILE: _npy(vision_kinds),
                         HEAD_STATE_FILE: _state_npz(head)},
        )
    ]
