"""Bundle target "vision": EfficientNet-Lite0 + class-prompt embeddings, uint8 RGB in."""

from __future__ import annotations

from importlib import metadata

import cv2
import numpy as np
import torch

from perceptd.daemon.inference.vision import INPUT_NAME, OUTPUT_NAMES, RESIZE_INPUT, preprocess
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models import vision

# Photos for the parity check: real content, one of each kind the demo uses.
PARITY_PHOTOS = ("cat", "coffee", "astronaut", "motorcycle", "rocket", "space", "grass", "brick")


def _photos(ctx: ExportContext) -> list[np.ndarray]:
    return [preprocess(frame) for frame in _frames(ctx)]


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


def _frames(ctx: ExportContext) -> list[np.ndarray]:
    """Raw BGR frames as cameras deliver them: each photo at its own size, and at 640x480."""
    out = []
    for name in PARITY_PHOTOS:
        frame = cv2.imread(str(ctx.samples_dir / "images" / f"{name}.jpg"), cv2.IMREAD_COLOR)
        if frame is None:
            raise FileNotFoundError(f"parity photo missing or unreadable: {name}.jpg")
        out.append(frame)
    return out


def resize_target(ctx: ExportContext) -> ExportTarget:
    """The device-side preprocessing graph (see models.vision.FrameResize)."""
    frames = _frames(ctx)
    camera = np.stack([cv2.resize(f, (640, 480), interpolation=cv2.INTER_AREA) for f in frames])
    return ExportTarget(
        name="vision_resize",
        module=vision.FrameResize().eval(),
        example_inputs=(torch.from_numpy(camera[:2].copy()),),
        input_names=[RESIZE_INPUT],
        output_names=[INPUT_NAME],
        dynamic_axes={RESIZE_INPUT: {0: "batch", 1: "height", 2: "width"}, INPUT_NAME: {0: "batch"}},
        parity_inputs=[(f[None],) for f in frames] + [(camera,)],
        # uint8 out: torch and ONNX Runtime may round an exact .5 differently (1 grey level)
        tolerances={INPUT_NAME: 1.0},
        preprocessing={"input_name": RESIZE_INPUT, "layout": "NHWC", "dtype": "uint8",
                       "channel_order": "BGR", "output_size": vision.INPUT_SIZE,
                       "method": "bilinear (half-pixel, no antialias), round, BGR->RGB",
                       "feeds": "vision"},
        source={"package": "perceptd", "version": metadata.version("perceptd"), "license": "Apache-2.0",
                "notes": "no weights: resize + channel swap of models.vision.FrameResize"},
    )


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
        ),
        resize_target(ctx),
    ]
