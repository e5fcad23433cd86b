"""Bundle targets "face_pnet", "face_rnet", "face_onet": MTCNN stages, uint8 RGB NHWC in.

Parity runs on real content: pyramid levels of the astronaut photo for PNet (several sizes,
so the dynamic H/W axes are exercised) and 24/48-px crops of its face and of background
regions for RNet/ONet.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from perceptd.daemon.inference import face as rt
from perceptd.export.target import FEATURE_TOL, PROB_TOL, ExportContext, ExportTarget
from perceptd.models import face

INPUT_NAME = "image"
PARITY_PHOTO = "astronaut"
# Boxes (x1, y1, x2, y2) on the 512x512 astronaut photo: the face (facenet-pytorch finds it at
# about 180,60-269,173), a loose and a tight variant of it, and background patches.
PARITY_BOXES = np.array(
    [
        [180, 60, 269, 173],
        [160, 40, 290, 190],
        [195, 80, 255, 150],
        [0, 0, 120, 120],
        [300, 250, 480, 430],
        [60, 300, 200, 440],
        [380, 20, 500, 140],
        [200, 200, 330, 330],
    ],
    dtype=np.float32,
)


def preprocessing() -> dict:
    """MTCNN constants shared by the three stages (FaceDetector takes this dict)."""
    return {
        "input_name": INPUT_NAME,
        "layout": "NHWC",
        "dtype": "uint8",
        "channel_order": "RGB",
        "normalisation_in_graph": True,
        "pixel_offset": face.PIXEL_OFFSET,
        "pixel_scale": face.PIXEL_SCALE,
        "resize": "area",
        **rt.DEFAULTS,
        "pnet_cell": face.PNET_CELL,
        "pnet_stride": face.PNET_STRIDE,
        "rnet_size": face.RNET_SIZE,
        "onet_size": face.ONET_SIZE,
    }


def _photo(ctx: ExportContext) -> np.ndarray:
    path = ctx.samples_dir / "images" / f"{PARITY_PHOTO}.jpg"
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise FileNotFoundError(f"parity photo missing or unreadable: {path}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _pyramid(image: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The levels the detector feeds PNet for this photo, plus a non-square one."""
    h, w = image.shape[:2]
    scales = rt.pyramid_scales(h, w, 40.0, rt.DEFAULTS["scale_factor"], face.PNET_CELL)
    levels = [(rt.resize_level(image, s)[None],) for s in scales[::2]]
    wide = cv2.resize(image[100:300], (150, 75), interpolation=cv2.INTER_AREA)
    levels.append((np.stack([wide, wide[::-1]]),))  # batch 2, H != W
    return levels


def _output_axes(outputs: list[str], spatial: bool) -> dict[str, dict[int, str]]:
    if not spatial:
        return {o: {0: "batch"} for o in outputs}
    # PNet: reg [B,4,h,w], prob [B,h,w]
    return {"reg": {0: "batch", 2: "out_h", 3: "out_w"}, "prob": {0: "batch", 1: "out_h", 2: "out_w"}}


def _target(
    name: str,
    net: torch.nn.Module,
    stage: str,
    inputs: list[tuple[np.ndarray, ...]],
    preprocessing_dict: dict,
) -> ExportTarget:
    spatial = stage == "pnet"
    outputs = face.output_names(stage)
    in_axes = {0: "batch", 1: "height", 2: "width"} if spatial else {0: "batch"}
    return ExportTarget(
        name=name,
        module=face.MTCNNStage(net).eval(),
        example_inputs=(torch.from_numpy(inputs[0][0].copy()),),
        input_names=[INPUT_NAME],
        output_names=outputs,
        dynamic_axes={INPUT_NAME: in_axes, **_output_axes(outputs, spatial)},
        parity_inputs=inputs,
        tolerances={o: (PROB_TOL if o == "prob" else FEATURE_TOL) for o in outputs},
        preprocessing=preprocessing_dict,
        source=face.source_info(),
    )


def targets(ctx: ExportContext) -> list[ExportTarget]:
    image = _photo(ctx)
    pre = preprocessing()
    rnet_crops, _ = rt.crops(image, PARITY_BOXES, face.RNET_SIZE)
    onet_crops, _ = rt.crops(image, PARITY_BOXES, face.ONET_SIZE)
    return [
        _target("face_pnet", face.load_pnet(), "pnet", _pyramid(image), pre),
        _target("face_rnet", face.load_rnet(), "rnet", [(rnet_crops[:1],), (rnet_crops,)], pre),
        _target("face_onet", face.load_onet(), "onet", [(onet_crops[:1],), (onet_crops,)], pre),
    ]
