"""PyTorch vs ONNX Runtime on real inputs: the exported graph must compute what PyTorch does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from perceptd.daemon.inference.session import SessionOptions, create_session
from perceptd.export.target import ExportTarget


class ParityError(Exception):
    """Raised when an output differs by more than its tolerance; names model and output."""


@dataclass(frozen=True)
class ParityResult:
    model: str
    per_output: dict[str, float]  # max |torch - ort| over all parity inputs
    tolerances: dict[str, float]
    n_inputs: int

    @property
    def max_abs_diff(self) -> float:
        return max(self.per_output.values()) if self.per_output else 0.0

    @property
    def failures(self) -> list[str]:
        return [
            f"{self.model}.{name}: max_abs_diff {d:.3g} > tolerance {self.tolerances[name]:g}"
            for name, d in self.per_output.items()
            if not d <= self.tolerances[name]
        ]

    def manifest_entry(self) -> dict:
        return {
            "max_abs_diff": self.max_abs_diff,
            "per_output": self.per_output,
            "tolerances": self.tolerances,
            "n_inputs": self.n_inputs,
        }


def _torch_outputs(target: ExportTarget, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = target.module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    if isinstance(out, torch.Tensor):
        out = (out,)
    return [o.detach().numpy() for o in out]


def check_parity(target: ExportTarget, onnx_path: Path) -> ParityResult:
    """Compare every output on every real input; missing tolerance counts as a failure."""
    if not target.parity_inputs:
        raise ParityError(f"{target.name}: no parity inputs given (real inputs are required)")
    sess = create_session(onnx_path, SessionOptions(device="cpu", intra_op_threads=2))
    worst = {name: 0.0 for name in target.output_names}
    for inputs in target.parity_inputs:
        feeds = dict(zip(target.input_names, inputs, strict=True))
        ort_out = sess.run(target.output_names, feeds)
        for name, t_out, o_out in zip(
            target.output_names, _torch_outputs(target, inputs), ort_out, strict=True
        ):
            if t_out.shape != o_out.shape:
                raise ParityError(
                    f"{target.name}.{name}: shape {o_out.shape} from ONNX, {t_out.shape} from torch"
                )
            diff = float(np.max(np.abs(t_out.astype(np.float64) - o_out))) if t_out.size else 0.0
            worst[name] = max(worst[name], diff)
    tol = {name: target.tolerances.get(name, 0.0) for name in target.output_names}
    return ParityResult(target.name, worst, tol, len(target.parity_inputs))
