"""Per model: ONNX Runtime latency at batch 1 and 8 against PyTorch eager on the same input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perceptd.bench.common import environment, time_call, write_json


def _batched(target, inputs: tuple[np.ndarray, ...], batch: int) -> tuple[np.ndarray, ...]:
    """Replicate real inputs along each input's own batch axis (named "batch")."""
    out = []
    for name, arr in zip(target.input_names, inputs, strict=True):
        axes = [ax for ax, n in target.dynamic_axes.get(name, {}).items() if n == "batch"]
        if not axes:
            out.append(arr)
            continue
        ax = axes[0]
        reps = int(np.ceil(batch / arr.shape[ax]))
        arr = np.concatenate([arr] * reps, axis=ax)
        out.append(np.take(arr, np.arange(batch), axis=ax))
    return tuple(out)


def _has_batch(target) -> bool:
    return any("batch" in axes.values() for axes in target.dynamic_axes.values())


def bench_models(bundle_dir: Path, repeat: int, threads: int = 1) -> dict[str, Any]:
    import torch

    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.inference.session import SessionOptions, create_session
    from perceptd.export.bundle import make_context
    from perceptd.export.targets import TARGET_MODULES, builder

    torch.set_num_threads(threads)
    bundle = verify_bundle(bundle_dir)
    ctx = make_context(Path("/tmp"))
    rows = []
    for group in TARGET_MODULES:
        for t in builder(group)(ctx):
            if not bundle.has(t.name):
                continue
            sess = create_session(bundle.model_path(t.name), SessionOptions("cpu", threads))
            torch.set_num_threads(threads)  # model constructors may reset it (silero does)
            for batch in (1, 8) if _has_batch(t) else (1,):
                inputs = _batched(t, t.parity_inputs[0], batch)
                feeds = dict(zip(t.input_names, inputs, strict=True))
                tin = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]

                def run_torch(tin=tin, mod=t.module) -> None:
                    with torch.inference_mode():
                        mod(*tin)

                ort_t = time_call(lambda s=sess, f=feeds: s.run(None, f), repeat)
                torch_t = time_call(run_torch, repeat)
                rows.append({
                    "model": t.name, "batch": batch, "threads": threads,
                    "provider": sess.get_providers()[0],
                    "ort_ms": ort_t["median_ms"], "ort_p90_ms": ort_t["p90_ms"],
                    "torch_ms": torch_t["median_ms"], "torch_p90_ms": torch_t["p90_ms"],
                    "speedup_ort_over_torch": torch_t["median_ms"] / ort_t["median_ms"],
                    "input_shapes": [list(a.shape) for a in inputs],
                })
    return {"kind": "models", **environment(), "bundle": bundle.version, "results": rows}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    labels = [f"{r['model']}\nb{r['batch']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.8), 4.5))
    ax.bar(x - 0.2, [r["ort_ms"] for r in rows], 0.4, label="ONNX Runtime")
    ax.bar(x + 0.2, [r["torch_ms"] for r in rows], 0.4, label="PyTorch eager")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("median latency per call (ms, log)")
    ax.set_title(f"perceptd models, {data['machine']['cpu']} ({rows[0]['threads']} thread), "
                 f"{data['date'][:10]}")
    for i, r in enumerate(rows):
        ax.annotate(f"x{r['speedup_ort_over_torch']:.1f}", (i, r["ort_ms"]), ha="center",
                    va="bottom", fontsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(data: dict[str, Any], echo=print) -> None:
    echo(f"{'model':<10} {'batch':>5} {'ORT ms':>9} {'torch ms':>9} {'torch/ORT':>9}  provider")
    for r in data["results"]:
        echo(f"{r['model']:<10} {r['batch']:>5} {r['ort_ms']:>9.3f} {r['torch_ms']:>9.3f} "
             f"{r['speedup_ort_over_torch']:>9.2f}  {r['provider']}")


def main(bundle_dir: Path, repeat: int, json_out: str | None) -> Path:
    data = bench_models(bundle_dir, repeat)
    print_table(data)
    path = write_json("models", data, json_out)
    plot(data, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return path
