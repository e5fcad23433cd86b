"""Bundle target "vision": EfficientNet-Lite0 + class-prompt embeddings, uint8 RGB in."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from perceptd.daemon.inference.vision import INPUT_NAME, OUTPUT_NAMES, preprocess
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models import vision

# Photos for the parity check: real content, one of each kind the demo uses.
PARITY_PHOTOS = ("cat", "coffee", "astronaut", "motorcycle", "rocket", "space", "grass", "brick")


def _photos(ctx: ExportContext) -> list[np.ndarray]:
    out = []
    for name in PARITY_PHOTOS:
        path = ctx.samples_dir / "images" / f"{name}.jpg"
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise FileNotFoundError(f"parity photo missing or unreadable: {path}")
        out.append(preprocess(frame))
    return out


def preprocessing() -> dict:
    """What VisionModel needs to feed the graph: everything float lives inside it."""
    return {
        "input_name": INPUT_NAME,
        "input_size": vision.INPUT_SIZE,
        "layout": "NHWC",
        "dtype": "uint8",
        "channel_order": "RGB",
        "resize": "bilinear",
        "center_crop": False,
        "normalisation_in_graph": True,
        "pixel_offset": vision.PIXEL_OFFSET,
        "pixel_scale": vision.PIXEL_SCALE,
        "formula": "(float(x) - 127.5) / 127.5, NHWC->NCHW, inside the graph",
        "class_prompt_template": vision.PROMPT_TEMPLATE,
    }


def targets(ctx: ExportContext) -> list[ExportTarget]:
    class_embeddings = torch.from_numpy(
        np.asarray(ctx.embed_texts(vision.imagenet_prompt_texts()), dtype=np.float32)
    )
    module = vision.load_vision_encoder(class_embeddings)
    photos = _photos(ctx)
    example = torch.from_numpy(photos[0][None].copy())
    return [
        ExportTarget(
            name="vision",
            module=module,
            example_inputs=(example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}},
            parity_inputs=[(photos[0][None],), (np.stack(photos),)],
            tolerances={"probs": PROB_TOL, "features": FEATURE_TOL, "embed": FEATURE_TOL},
            preprocessing=preprocessing(),
            source=vision.source_info(),
            labels=vision.imagenet_class_names(),
        )
    ]
