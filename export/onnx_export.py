"""Turn an ExportTarget into an ONNX file that older runtimes load too (opset 17, IR 8)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from perceptd.export.target import ExportTarget

OPSET = 17  # <= 18 and IR <= 10 keep Jetson-era ONNX Runtime builds able to load the bundle
log = logging.getLogger(__name__)


def export_onnx(target: ExportTarget, out_dir: Path) -> Path:
    """Export with the TorchScript-based exporter (IR 8); fail loudly if the checker objects."""
    path = out_dir / f"{target.name}.onnx"
    target.module.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            target.module,
            target.example_inputs,
            str(path),
            input_names=target.input_names,
            output_names=target.output_names,
            dynamic_axes=target.dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    log.info("event=exported model=%s file=%s bytes=%d", target.name, path.name, path.stat().st_size)
    return path


def describe(path: Path) -> dict:
    """Opset, IR version and input/output names with symbolic shapes, for the manifest."""
    model = onnx.load(str(path), load_external_data=False)

    def shape(v: onnx.ValueInfoProto) -> list[int | str]:
        dims = v.type.tensor_type.shape.dim
        return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]

    def dtype(v: onnx.ValueInfoProto) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name

    inits = {i.name for i in model.graph.initializer}
    return {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "inputs": [
            {"name": i.name, "shape": shape(i), "dtype": dtype(i)}
            for i in model.graph.input
            if i.name not in inits
        ],
        "outputs": [{"name": o.name, "shape": shape(o), "dtype": dtype(o)} for o in model.graph.output],
    }
