"""MTCNN face detector sub-networks (PNet, RNet, ONet) with facenet-pytorch's weights (MIT).

The layer definitions mirror facenet_pytorch.models.mtcnn so its shipped state dicts load as
they are, but facenet_pytorch itself is never imported: its package imports torchvision, which
must not be installed beside onnxruntime-gpu.  The weight files are found through the import
system's spec without executing the package.

`MTCNNStage` wraps a net for export: uint8 NHWC RGB in (the cast, (x-127.5)/128 and the
transpose move into the graph) and only the face probability channel out, so the daemon's numpy
detection pipeline does no per-pixel float work of its own.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

# MTCNN constants (Zhang et al. 2016, as used by facenet-pytorch).
PIXEL_OFFSET = 127.5
PIXEL_SCALE = 0.0078125  # 1/128
PNET_CELL = 12  # PNet's receptive field: one output cell = a 12x12 window ...
PNET_STRIDE = 2  # ... every 2 input pixels
RNET_SIZE = 24
ONET_SIZE = 48


def weights_dir() -> Path:
    """facenet_pytorch/data, located without importing facenet_pytorch."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("facenet-pytorch is not installed (pip install --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def source_info() -> dict[str, str]:
    """Provenance recorded in the bundle manifest."""
    return {
        "package": "facenet-pytorch",
        "version": metadata.version("facenet-pytorch"),
        "license": "MIT",
        "notes": "MTCNN P/R/O-Net weights from facenet_pytorch/data/*.pt (package not imported)",
    }


class PNet(nn.Module):
    """Proposal net, fully convolutional: [B,3,H,W] -> (reg [B,4,h,w], prob [B,2,h,w])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refine net: [B,3,24,24] -> (reg [B,4], prob [B,2])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the weights were converted from TF (W,H order)
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net: [B,3,48,48] -> (reg [B,4], landmarks [B,10], prob [B,2])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


_Net = TypeVar("_Net", bound=nn.Module)


def _load(net: _Net, name: str) -> _Net:
    state = torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_pnet() -> PNet:
    return _load(PNet(), "pnet")


def load_rnet() -> RNet:
    return _load(RNet(), "rnet")


def load_onet() -> ONet:
    return _load(ONet(), "onet")


class MTCNNStage(nn.Module):
    """Export form of a sub-net: uint8 [B,H,W,3] RGB -> (reg, [landmarks,] face prob).

    Outputs in order: PNet (reg [B,4,h,w], prob [B,h,w]); RNet (reg [B,4], prob [B]);
    ONet (reg [B,4], landmarks [B,10], prob [B]).  prob is the softmax's face channel.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (image.permute(0, 3, 1, 2).float() - PIXEL_OFFSET) * PIXEL_SCALE
        *rest, prob = self.net(x)
        return (*rest, prob[:, 1])


def output_names(stage: str) -> list[str]:
    """ONNX output names of MTCNNStage for "pnet" | "rnet" | "onet"."""
    return ["reg", "landmarks", "prob"] if stage == "onet" else ["reg", "prob"]
