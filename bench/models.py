"""Per model: bare ONNX Runtime latency and throughput at batch 1/8/32 on each provider that
really runs here, with PyTorch eager on the same inputs and device beside it.

Inputs are the daemon's real ones (sample photos through the vision preprocessing, speech
through the VAD/log-mel front ends, commands through the tokenizer, real embeddings into the
fusion head), replicated along each input's own "batch" axis.  PyTorch needs the export
extra (torch + the weight packages); where it is missing the rows say so and ORT still runs.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from perceptd.bench import media
from perceptd.bench.common import environment, write_json

log = logging.getLogger(__name__)
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def time_budget(fn: Callable[[], Any], budget_s: float = 1.5, min_n: int = 3, max_n: int = 50,
                warmup: int = 2, sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median/p90 ms per call: at least `min_n` calls, more while under `budget_s`."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(samples) < min_n or (len(samples) < max_n and time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"median_ms": statistics.median(samples),
            "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))], "n": len(samples)}


# --------------------------------------------------------------------------- real inputs


def _images() -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(media.SAMPLES / "images" / f"{p}.jpg")), media.SIZE)
            for p in media.PHOTOS]


def real_feeds(m) -> dict[str, dict[str, np.ndarray]]:
    """One real feed per model of the bundle (batch 1, or a few rows where natural)."""
    import soundfile as sf

    from perceptd.daemon.inference.face import pyramid_scales, resize_level
    from perceptd.daemon.inference.vision import preprocess

    imgs = _images()
    feeds: dict[str, dict[str, np.ndarray]] = {}
    feeds["vision"] = {"image": np.stack([preprocess(i) for i in imgs])}  # host path, any device
    feeds["vision_resize"] = {"frame": np.stack(imgs)}  # 640x480 BGR camera frames
    pcm, _ = sf.read(str(media.speech_wav()), dtype="float32")
    feeds["audio"] = {"patches": m.audio.patches(pcm)}
    chunk, ctx = m.vad.chunk_samples, m.vad.context_samples
    n = len(pcm) // chunk - 1
    starts = np.linspace(ctx, n * chunk - chunk, 32).astype(int)
    feeds["vad"] = {"audio": np.stack([pcm[s - ctx:s + chunk] for s in starts]).astype(np.float32),
                    "state": np.zeros((2, len(starts), m.vad.state_size), np.float32)}
    ids, mask = m.text.tokenize(list(media.COMMANDS))
    feeds["text"] = {"input_ids": ids, "attention_mask": mask}
    if m.face is not None:
        rgb = cv2.cvtColor(cv2.resize(imgs[2], (320, 240)), cv2.COLOR_BGR2RGB)  # the astronaut
        scale = pyramid_scales(240, 320, 40 * 0.5, m.face.scale_factor)[0]
        feeds["face_pnet"] = {"image": resize_level(rgb, scale)[None]}
        feeds["face_rnet"] = {"image": np.stack([cv2.resize(rgb[y:y + 60, x:x + 60], (24, 24))
                                                 for y in range(0, 180, 30) for x in range(0, 260, 52)])}
        feeds["face_onet"] = {"image": np.stack([cv2.resize(rgb[y:y + 60, x:x + 60], (48, 48))
                                                 for y in range(0, 180, 30) for x in range(0, 260, 52)])}
    out = m.vision.infer(feeds["vision"]["image"])
    text = m.text.embed(list(media.COMMANDS))
    rows = len(out.embed)
    x = np.stack([out.embed, np.repeat(m.face_anchor[None], rows, 0), text[:rows], text[::-1][:rows]], 1)
    fusion = {"x": x.astype(np.float32), "mask": np.ones((rows, 4), np.float32)}
    attr = {"event_affine": "affine"}
    for i in m.fusion.session.get_inputs():
        if i.name not in fusion:
            fusion[i.name] = np.asarray(getattr(m.space, attr.get(i.name, i.name)))
    feeds["fusion"] = fusion
    return feeds


def batched(sess, feed: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray] | None:
    """Replicate real rows along each input's "batch" axis; None if the model has none."""
    out, any_batch = {}, False
    for i in sess.get_inputs():
        arr = feed[i.name]
        axes = [k for k, d in enumerate(i.shape) if d == "batch"]
        if not axes:
            out[i.name] = arr
            continue
        any_batch = True
        ax = axes[0]
        reps = int(np.ceil(batch / arr.shape[ax]))
        out[i.name] = np.ascontiguousarray(np.take(np.concatenate([arr] * reps, axis=ax),
                                                   np.arange(batch), axis=ax))
    return out if any_batch else None


# --------------------------------------------------------------------------- providers


def working_providers(model_path: Path, device: str, threads: int) -> list[str]:
    """Providers that really run a session here (onnxruntime-gpu lists more than that)."""
    from perceptd.daemon.inference.session import SessionOptions, create_session, tensorrt_loadable

    want = [CPU]
    if device == "cuda":
        want = [*([TRT] if tensorrt_loadable() else []), CUDA, CPU]
    ok = []
    for p in want:
        sess = create_session(model_path, SessionOptions(device="cuda" if p != CPU else "cpu",
                                                         intra_op_threads=threads,
                                                         providers=(p, CPU) if p != CPU else (CPU,)))
        if sess.get_providers()[0] == p:
            ok.append(p)
    return ok


def _torch_targets(names: set[str]) -> tuple[dict[str, Any], str]:
    """PyTorch modules of the bundle's models (the export targets), or why there are none."""
    try:
        from perceptd.export.bundle import make_context
        from perceptd.export.targets import TARGET_MODULES, builder
    except Exception as exc:  # noqa: BLE001 - torch or the export extra is not installed
        return {}, f"export extra not importable: {type(exc).__name__}: {exc}"
    out: dict[str, Any] = {}
    why = ""
    try:
        ctx = make_context(Path("/tmp"))
    except Exception as exc:  # noqa: BLE001 - a weight package missing
        return {}, f"export context failed: {type(exc).__name__}: {exc}"
    for group in TARGET_MODULES:
        try:
            for t in builder(group)(ctx):
                if t.name in names:
                    out[t.name] = t
        except Exception as exc:  # noqa: BLE001 - one missing weight package skips its group
            why += f"{group}: {type(exc).__name__}: {exc}; "
    return out, why


# --------------------------------------------------------------------------- the benchmark


def bench_models(bundle_dir: Path, cfg, device: str = "cpu", batches: list[int] | None = None,
                 threads: int = 1, torch_eager: bool = True, budget_s: float = 1.5) -> dict[str, Any]:
    from perceptd.daemon.bundle import verify_bundle
    from perceptd.daemon.inference.models import load_models
    from perceptd.daemon.inference.session import SessionOptions, create_session

    batches = batches or [1, 8, 32]
    bundle = verify_bundle(bundle_dir)
    m = load_models(bundle, cfg.events, SessionOptions("cpu", threads), True)
    feeds = real_feeds(m)
    names = [n for n in feeds if bundle.has(n)]
    targets, torch_why = _torch_targets(set(names)) if torch_eager else ({}, "disabled (--no-torch)")
    torch = None
    if targets:
        import torch  # noqa: F811 - only with the export extra

        torch.set_num_threads(threads)
    providers = working_providers(bundle.model_path("vision"), device, threads)
    rows = []
    for name in names:
        path = bundle.model_path(name)
        for prov in providers:
            sess = create_session(path, SessionOptions(device="cuda" if prov != CPU else "cpu",
                                                       intra_op_threads=threads,
                                                       providers=(prov, CPU) if prov != CPU else (CPU,)))
            for b in batches:
                feed = batched(sess, feeds[name], b)
                if feed is None:
                    if b != batches[0]:
                        continue
                    feed, b = feeds[name], 1
                t = time_budget(lambda s=sess, f=feed: s.run(None, f), budget_s)
                row = {"model": name, "batch": b, "provider": prov.removesuffix("ExecutionProvider"),
                       "threads": threads, "ort_ms": round(t["median_ms"], 4),
                       "ort_p90_ms": round(t["p90_ms"], 4),
                       "ort_items_per_s": round(1e3 * b / t["median_ms"], 1),
                       "n": t["n"], "input_shapes": {k: list(v.shape) for k, v in feed.items()}}
                row.update(_torch_row(torch, targets.get(name), feed, prov, budget_s, t["median_ms"], b))
                rows.append(row)
                log.info("event=model_point model=%s batch=%d provider=%s ort_ms=%.3f", name, b, prov,
                         t["median_ms"])
    if "vision_resize" in names:
        rows += _host_resize_rows(feeds["vision_resize"]["frame"], batches, threads, budget_s)
    data = {"kind": "models", **environment(), "bundle": bundle.version, "device": device,
            "providers_tested": [p.removesuffix("ExecutionProvider") for p in providers],
            "torch_eager": bool(targets), "torch_note": torch_why or None, "results": rows}
    data["gpu_speedup"] = _speedups(rows)
    return data


def _host_resize_rows(frames: np.ndarray, batches: list[int], threads: int,
                      budget_s: float) -> list[dict[str, Any]]:
    """The cv2 preprocessing the daemon does on the host, beside the vision_resize graph rows."""
    import cv2

    from perceptd.daemon.inference.vision import preprocess

    cv2.setNumThreads(threads)
    rows = []
    for b in batches:
        batch = [frames[i % len(frames)] for i in range(b)]
        t = time_budget(lambda bb=batch: np.stack([preprocess(f) for f in bb]), budget_s)
        rows.append({"model": "vision_resize", "batch": b, "provider": "cv2-host", "threads": threads,
                     "ort_ms": round(t["median_ms"], 4), "ort_p90_ms": round(t["p90_ms"], 4),
                     "ort_items_per_s": round(1e3 * b / t["median_ms"], 1), "n": t["n"],
                     "input_shapes": {"frame": [b, *frames.shape[1:]]}, "torch_ms": None,
                     "torch_items_per_s": None, "speedup_ort_over_torch": None,
                     "note": "cv2.resize + cvtColor + np.stack (VisionModel host path), not ORT"})
    return rows


def _torch_row(torch, target, feed: dict[str, np.ndarray], prov: str, budget_s: float,
               ort_ms: float, b: int) -> dict[str, Any]:
    if torch is None or target is None:
        return {"torch_ms": None, "torch_items_per_s": None, "speedup_ort_over_torch": None}
    dev = "cuda" if prov != CPU else "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        return {"torch_ms": None, "torch_items_per_s": None, "speedup_ort_over_torch": None}
    mod = target.module.to(dev)
    tin = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(dev) for n in target.input_names]
    sync = torch.cuda.synchronize if dev == "cuda" else None

    def call() -> None:
        with torch.inference_mode():
            mod(*tin)

    t = time_budget(call, budget_s, sync=sync)
    target.module.to("cpu")
    return {"torch_device": dev, "torch_ms": round(t["median_ms"], 4),
            "torch_items_per_s": round(1e3 * b / t["median_ms"], 1),
            "speedup_ort_over_torch": round(t["median_ms"] / ort_ms, 3)}


def _speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and batch: the GPU provider's throughput over the CPU's (same run)."""
    cpu = {(r["model"], r["batch"]): r for r in rows if r["provider"] == "CPU"}
    host = {(r["model"], r["batch"]): r for r in rows if r["provider"] == "cv2-host"}
    out = []
    for r in rows:
        c = cpu.get((r["model"], r["batch"]))
        if r["provider"] not in ("CPU", "cv2-host") and c:
            row = {"model": r["model"], "batch": r["batch"], "provider": r["provider"],
                   "speedup_over_cpu": round(c["ort_ms"] / r["ort_ms"], 2)}
            h = host.get((r["model"], r["batch"]))
            if h:  # the resize graph on the GPU against the daemon's cv2 host path
                row["speedup_over_cv2_host"] = round(h["ort_ms"] / r["ort_ms"], 2)
            out.append(row)
    return out


# --------------------------------------------------------------------------- report


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    labels = [f"{r['model']}\nb{r['batch']} {r['provider']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(10, len(rows) * 0.55), 5))
    ax.bar(x - 0.2, [r["ort_items_per_s"] for r in rows], 0.4, label="ONNX Runtime")
    ax.bar(x + 0.2, [r["torch_items_per_s"] or 0 for r in rows], 0.4, label="PyTorch eager")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=6, rotation=90)
    ax.set_ylabel("items per second (log)")
    ax.set_title(f"perceptd models, {data['machine']['cpu']} ({rows[0]['threads']} ORT/torch thread), "
                 f"{data['device']}, {data['date'][:10]}")
    for i, r in enumerate(rows):
        if r.get("speedup_ort_over_torch"):
            ax.annotate(f"x{r['speedup_ort_over_torch']:.1f}", (i, r["ort_items_per_s"]), ha="center",
                        va="bottom", fontsize=6)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(data: dict[str, Any], echo=print) -> None:
    echo(f"{'model':<14} {'batch':>5} {'prov':>8} {'ORT ms':>9} {'ORT /s':>9} {'torch ms':>9} "
         f"{'torch/ORT':>9}")
    for r in data["results"]:
        tm = f"{r['torch_ms']:.3f}" if r["torch_ms"] is not None else "-"
        sp = f"{r['speedup_ort_over_torch']:.2f}" if r["speedup_ort_over_torch"] else "-"
        echo(f"{r['model']:<14} {r['batch']:>5} {r['provider']:>8} {r['ort_ms']:>9.3f} "
             f"{r['ort_items_per_s']:>9.1f} {tm:>9} {sp:>9}")
    for s in data.get("gpu_speedup", []):
        echo(f"GPU speedup {s['model']} b{s['batch']} {s['provider']}: x{s['speedup_over_cpu']}")
    if data.get("torch_note"):
        echo(f"note: {data['torch_note']}")


def main(bundle_dir: Path, repeat: int, json_out: str | None, device: str = "cpu",
         batches: list[int] | None = None, config: str | None = None, torch_eager: bool = True) -> Path:
    from perceptd.daemon.config import load_config

    cfg = load_config(config or Path(__file__).resolve().parents[1] / "config.yaml")
    budget = max(0.5, min(5.0, repeat * 0.075))  # --repeat 20 -> 1.5 s per point
    data = bench_models(bundle_dir, cfg, device, batches, threads=1, torch_eager=torch_eager,
                        budget_s=budget)
    data["cores"] = len(os.sched_getaffinity(0))
    print_table(data)
    path = write_json(f"models-{device}", data, json_out)
    plot(data, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return path
