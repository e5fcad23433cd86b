"""`perceptd retrain`: labelled samples -> fine-tuned fusion head -> bundle -> gate -> (promote).

1. load the store's samples made by the current bundle's encoders; split by time blocks
   (export/blocks.py); refuse to judge (exit 4) a taught event with too few independent
   held-out blocks;
2. compile the event space exactly like the daemon (daemon/fusion/space.py, ONNX text model);
3. train (export/finetune.py; single process, `--nproc N` spawned ranks, or torchrun);
4. export a new bundle version (only the fusion head re-exported; parity checked by the export);
5. evaluate old vs new through ONNX Runtime on the held-out split, taught events against
   their baselines (zero-shot prompt at its best training threshold; label-permutation runs
   trained here), parity on those real samples, latency; write gate.json / gate.md / gate.png
   under samples.retrain.dir/<version>/;
6. a passing bundle stays in the bundle folder (promoted with --promote, and a running daemon
   is asked to reload; or, with --shadow MINUTES, the running daemon runs it in shadow beside
   the live bundle); a refused one is moved aside into the report folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perceptd.daemon.bundle import Bundle, resolve_bundle, verify_bundle
from perceptd.daemon.config import Config, load_config
from perceptd.daemon.fusion.space import compile_events
from perceptd.daemon.inference.fusion_head import FusionModel
from perceptd.daemon.inference.session import SessionOptions
from perceptd.daemon.inference.text import TextModel
from perceptd.daemon.samples.logger import open_store
from perceptd.daemon.samples.record import encoder_fingerprint
from perceptd.daemon.samples.store import StoreError
from perceptd.errors import UserError
from perceptd.export import blocks, finetune, gate
from perceptd.export.target import PROB_TOL

log = logging.getLogger(__name__)
KEEP_REJECTED = 3  # refused bundles kept for inspection (each is a full bundle copy)
EXIT_REFUSED = 3  # the gate refused the candidate (the running bundle stays)
EXIT_SHADOW_FAILED = 5  # passed, but --shadow: no daemon to ask, or it refused the shadow


class NotEnoughData(UserError):
    """Too few usable labelled samples yet: nothing was trained (a timer simply tries later)."""

    exit_code = 4


def _base_state(base: Bundle) -> dict[str, np.ndarray] | None:
    from perceptd.export.targets.fusion import HEAD_STATE_FILE

    if HEAD_STATE_FILE not in base.manifest.get("files", {}):
        return None  # an original export: start from the zero-shot head
    return finetune.load_state_npz(base.path / HEAD_STATE_FILE)


def _parity(new: Bundle, res: finetune.TrainResult, space: dict[str, np.ndarray],
            held: finetune.LabelledSet, ort_scores: np.ndarray) -> dict[str, Any]:
    """The export's own parity record, plus PyTorch vs ONNX on the real held-out samples."""
    import torch

    entry = new.model("fusion").get("parity") or {}
    out = {f"export.{k}": {"max_abs_diff": float(v), "tolerance": float(entry["tolerances"][k])}
           for k, v in (entry.get("per_output") or {}).items()}
    head = finetune.initial_head({k: v.numpy() for k, v in res.state.items()}, 0).eval()
    with torch.no_grad():
        ref = finetune.Trainable(head, res.affine, space)(
            torch.from_numpy(held.x), torch.from_numpy(held.mask), torch.from_numpy(_aux(held)))[0]
    out["heldout.scores"] = {"max_abs_diff": float(np.max(np.abs(ref.numpy() - ort_scores), initial=0.0)),
                             "tolerance": PROB_TOL}
    return out


def _aux(ls: finetune.LabelledSet) -> np.ndarray:
    if ls.aux is not None:
        return ls.aux
    return np.zeros((len(ls.ids), finetune.AUX_WIDTH + ls.target.shape[1]), np.float32)


def _torch_scores(state: dict[str, np.ndarray] | None, affine: np.ndarray, space: dict[str, np.ndarray],
                  ls: finetune.LabelledSet) -> np.ndarray:
    import torch

    head = finetune.initial_head(state, 0).eval()
    with torch.no_grad():
        return finetune.Trainable(head, affine, space)(
            torch.from_numpy(ls.x), torch.from_numpy(ls.mask), torch.from_numpy(_aux(ls)))[0].numpy()


THRESHOLD_STEP = 1e-3  # scores closer than this are one value for the zero-shot threshold


def best_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The threshold with the best F1 on these scores (midpoints between distinct scores, scores
    rounded to THRESHOLD_STEP so that no threshold splits near-identical inputs by float noise;
    ties: the higher threshold); returns (threshold, F1)."""
    scores = np.round(scores / THRESHOLD_STEP) * THRESHOLD_STEP
    u = np.unique(scores)
    if not u.size:
        return 0.5, 1.0
    cands = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]])
    best = (0.5, -1.0)
    for t in cands:
        f1 = gate.prf(scores >= t, truth)["f1"]
        if f1 >= best[1]:
            best = (float(t), f1)
    return best


def baselines(p: Prepared, thresholds: np.ndarray, runs: int) -> dict[str, dict[str, Any]]:
    """Per judged event: the zero-shot prompt (the exported head before any fine-tuning, its
    threshold tuned on the training split) and `runs` heads trained here on permuted training
    labels (same recipe, other seeds), all scored on the held-out blocks."""
    names = list(p.space_old.names)
    inp, tr, ho = p.inputs, p.train_set, p.held
    ones = np.tile(np.array([[1.0, 0.0]], np.float32), (len(names), 1))
    zs_tr = _torch_scores(None, ones, inp.space, tr)
    zs_ho = _torch_scores(None, ones, inp.space, ho)
    perm_scores = []
    for r in range(runs):
        rng = np.random.default_rng(10_007 * (inp.cfg["seed"] + 1) + r)
        perm = rng.permutation(len(inp.target))
        cfg = dict(inp.cfg, seed=inp.cfg["seed"] + 1 + r, shuffle_labels=False, device="cpu")
        res = finetune.train(dataclasses.replace(inp, target=inp.target[perm], known=inp.known[perm],
                                                 cfg=cfg), progress=False)
        perm_scores.append(_torch_scores({k: v.numpy() for k, v in res.state.items()}, res.affine,
                                         inp.space, ho))
    def step(v: np.ndarray) -> np.ndarray:
        return np.round(v / THRESHOLD_STEP) * THRESHOLD_STEP

    out = {}
    for e in p.judged:
        sel_tr, sel_ho = tr.known[:, e], ho.known[:, e]
        t, f1_tr = best_threshold(zs_tr[sel_tr, e], tr.target[sel_tr, e] > 0)
        truth = ho.target[sel_ho, e] > 0
        runs_prf = [gate.prf(s[sel_ho, e] >= thresholds[e], truth) for s in perm_scores]
        f1s = [m["f1"] for m in runs_prf]
        out[names[e]] = {
            "zero_shot": {"threshold": round(t, 4), "f1_train": f1_tr,
                          "heldout": gate.prf(step(zs_ho[sel_ho, e]) >= t, truth)},
            "permuted": {"runs": len(f1s), "f1": f1s, "max_f1": max(f1s) if f1s else None,
                         "mean_f1": round(float(np.mean(f1s)), 4) if f1s else None,
                         "heldout": runs_prf},
        }
    return out


def _prune_rejected(retrain_dir: Path, keep: int) -> None:
    runs = sorted(p for p in retrain_dir.glob("*/rejected") if p.is_dir())
    for p in runs[:-keep] if keep else runs:
        shutil.rmtree(p, ignore_errors=True)


@dataclass
class Prepared:
    """Everything training and evaluation need, built exactly like the daemon would."""

    base: Bundle
    data: finetune.SampleData
    train_set: finetune.LabelledSet
    held: finetune.LabelledSet
    text: TextModel
    space_old: Any  # EventSpace of the base bundle
    inputs: finetune.TrainInputs
    split: blocks.BlockSplit
    independence: dict[str, dict[str, Any]]  # taught event -> held-out blocks (judged and waiting)
    judged: list[int]  # taught events with enough independent held-out blocks
    waiting: list[int]  # taught events without: their labels are held back from training


def _usable(cfg: Config, mask: np.ndarray) -> np.ndarray:
    """[N,E]: the event can be scored on the sample (one of its modalities present, and the
    required ones); a label on a sample the event cannot see teaches it nothing."""
    from perceptd.daemon.fusion.space import MODALITIES

    allowed = np.array([[m in e.modalities for m in MODALITIES] for e in cfg.events], bool)
    required = np.array([[m in e.effective_required for m in MODALITIES] for e in cfg.events], bool)
    present = mask > 0
    some = (present[:, None, :] & allowed[None]).any(-1)
    needed = (~required[None] | present[:, None, :]).all(-1)
    return some & needed


def _independent(cfg: Config, lab: finetune.LabelledSet, sp: blocks.BlockSplit
                 ) -> tuple[dict[str, dict[str, Any]], list[int], list[int]]:
    """Per taught event (labelled positives): enough effective held-out blocks of positives and
    of negatives to judge it?  None judged while some are taught: not enough independent data."""
    names = [e.name for e in cfg.events]
    need = cfg.samples.retrain.split.min_blocks
    usable = _usable(cfg, lab.mask)
    taught = [e for e in range(len(names))
              if ((lab.target[:, e] > 0) & lab.known[:, e] & usable[:, e]).any()]
    ind = blocks.independence(sp.block_of, lab.target, lab.known, sp.held, names, taught)
    judged = [e for e in taught
              if ind[names[e]]["effective_pos"] >= need and ind[names[e]]["effective_neg"] >= need]
    waiting = [e for e in taught if e not in judged]
    for e in taught:
        total = len({sp.block_of[i] for i in range(len(lab)) if lab.target[i, e] > 0 and lab.known[i, e]})
        ind[names[e]].update(total_blocks_pos=total, judged=e in judged)
    if taught and not judged:
        why = "; ".join(f"{names[e]}: {ind[names[e]]['effective_pos']:g} effective held-out blocks with "
                        f"positives, {ind[names[e]]['effective_neg']:g} with negatives "
                        f"({ind[names[e]]['total_blocks_pos']} blocks with positives in all)"
                        for e in waiting)
        raise NotEnoughData(f"not enough independent data: need {need:g} effective held-out time blocks "
                            f"of positives and of negatives per taught event ({why}); label views from "
                            f"more distinct times (split.block_s = {cfg.samples.retrain.split.block_s:g} s)")
    return ind, judged, waiting


def prepare(cfg: Config, *, epochs: int | None = None, lr: float | None = None,
            seed: int | None = None, device: str = "cpu", shuffle_labels: bool = False) -> Prepared:
    """Samples -> split -> event space -> training inputs (no training yet)."""
    rc = cfg.samples.retrain
    base = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
    try:
        store = open_store(cfg.samples, writer=False, create=False)
    except StoreError as exc:
        raise NotEnoughData(f"no samples to retrain on: {exc}") from None
    with store:
        data = finetune.load_samples(store, cfg.events, encoder_fingerprint(base.manifest),
                                     rc.max_unlabelled)
    lab = data.labelled
    if len(lab) < rc.min_labelled:
        raise NotEnoughData(f"{len(lab)} usable labelled samples in {cfg.samples.dir}, need at least "
                        f"{rc.min_labelled} (label some: `perceptd samples label ID EVENT`)")
    sc = rc.split
    sp = blocks.split_blocks(lab.times, lab.sources, lab.target, lab.known, holdout=rc.holdout,
                             seed=seed if seed is not None else rc.seed, by=sc.by, block_s=sc.block_s,
                             per_source=sc.per_source, guard_s=sc.guard_s,
                             min_held=int(np.ceil(sc.min_blocks)))
    if len(sp.held) == 0 or len(sp.train) == 0:
        raise NotEnoughData(f"not enough independent data: all {len(lab)} labelled samples lie in "
                            f"{len(sp.blocks)} time block(s) of {sc.block_s:g} s; label views from more "
                            f"distinct times")
    independence, judged, waiting = _independent(cfg, lab, sp)
    train_set, held = lab.subset(sp.train), lab.subset(sp.held)
    if waiting:  # too few independent blocks to judge them: not taught this time (distilled)
        train_set.known = train_set.known.copy()
        train_set.known[:, waiting] = False
    text = TextModel(base.model_path("text"), base.file("text_tokenizer.json"), SessionOptions("cpu", 1))
    space_old = compile_events(cfg.events, text.embed, base)
    tcfg = finetune.train_config(rc, epochs=epochs, lr=lr, seed=seed)
    tcfg.update(shuffle_labels=shuffle_labels, device=device)
    inputs = finetune.TrainInputs(train_set.x, train_set.mask, train_set.target, train_set.known,
                                  data.unlabelled_x, data.unlabelled_mask, finetune.space_arrays(space_old),
                                  np.asarray(space_old.affine, np.float32), _base_state(base), tcfg,
                                  aux=_aux(train_set), uaux=data.unlabelled_aux)
    return Prepared(base, data, train_set, held, text, space_old, inputs, sp, independence, judged,
                    waiting)


def retrain(cfg: Config, *, promote_ok: bool = False, nproc: int = 1, epochs: int | None = None,
            lr: float | None = None, seed: int | None = None, device: str = "cpu",
            shuffle_labels: bool = False, progress: bool = True, wait_s: float = 30.0,
            shadow_minutes: float | None = None, recordings: list[Path] | None = None,
            config_path: Path | None = None, echo=print) -> dict[str, Any] | None:
    """The whole loop; returns the gate report (None on torchrun ranks other than 0).
    `recordings` (default samples.retrain.gate.recordings) turns on the labelled-recordings rule,
    replayed with `config_path` (the config retrain runs with: its bundle dir holds both bundles;
    None: each recording's own config)."""
    from perceptd.export.bundle import build_bundle, new_version

    rc = cfg.samples.retrain
    t_start = time.monotonic()
    p = prepare(cfg, epochs=epochs, lr=lr, seed=seed, device=device, shuffle_labels=shuffle_labels)
    base, data, train_set, held, text, space_old, inp = (p.base, p.data, p.train_set, p.held, p.text,
                                                          p.space_old, p.inputs)
    lab = data.labelled
    names = list(space_old.names)
    space = inp.space
    tcfg = inp.cfg
    opts = SessionOptions("cpu", 1)
    t_train = time.monotonic()
    backend = "nccl" if device == "cuda" else "gloo"
    res = finetune.run_training(inp, nproc, backend, progress=progress)
    if res is None:
        return None
    train_s = time.monotonic() - t_train

    version = new_version()
    calibration = {n: [float(k), float(b)] for n, (k, b) in zip(names, res.affine, strict=True)}
    new_path = build_bundle(cfg.bundle.dir, cfg.events, version=version, head_state=res.state,
                            activate=False, only=["fusion"], base=base.path, calibration=calibration,
                            echo=echo)
    new = verify_bundle(new_path)

    old_fm, new_fm = FusionModel(base.model_path("fusion"), opts), FusionModel(new.model_path("fusion"), opts)
    space_new = compile_events(cfg.events, text.embed, new)
    rows = held.rows()
    old_scores = old_fm.fuse(*rows[:2], space_old, *rows[2:]).scores
    new_scores = new_fm.fuse(*rows[:2], space_new, *rows[2:]).scores
    parity = _parity(new, res, space, held, new_scores)
    latency = gate.latency_ms(lambda x, m: old_fm.fuse(x, m, space_old),
                              lambda x, m: new_fm.fuse(x, m, space_new), held.x, held.mask)
    latency["budget_ms"] = rc.gate.latency_budget_ms
    thresholds = np.array([e.threshold_on for e in cfg.events], np.float32)
    t_base = time.monotonic()
    base_lines = baselines(p, thresholds, rc.gate.permutation_runs) if p.judged else {}
    base_s = time.monotonic() - t_base
    recs = list(rc.gate.recordings if recordings is None else recordings)
    t_rec = time.monotonic()
    rec_rule = recordings_rule(recs, base.path.name, new_path.name, config_path) if recs else None
    rec_s = time.monotonic() - t_rec
    report = gate.evaluate_gate(names=names, thresholds=thresholds, target=held.target, known=held.known,
                                old_scores=old_scores, new_scores=new_scores, sources=held.sources,
                                combos=held.combos, parity=parity, latency=latency, cfg=rc.gate,
                                baselines=base_lines, independence=p.independence,
                                recordings=rec_rule)
    strata: dict[str, int] = {}
    for s in lab.strata:
        strata[s] = strata.get(s, 0) + 1
    report.update({
        "bundle_version": version, "base_version": base.version,
        "data": {"labelled": len(lab), "train": len(train_set), "heldout": len(held),
                 "unlabelled": int(len(data.unlabelled_x)), "skipped": data.skipped, "strata": strata,
                 "heldout_ids": held.ids},
        "split": _split_report(cfg, lab, p.split),
        "training": {"epochs": tcfg["epochs"], "nproc": res.world_size, "lr": tcfg["lr"],
                     "seed": tcfg["seed"], "device": device, "shuffled_labels": shuffle_labels,
                     "loss_first": res.history[0], "loss_last": res.history[-1],
                     "seconds": round(train_s, 2), "baseline_seconds": round(base_s, 2),
                     **({"recordings_seconds": round(rec_s, 2)} if recs else {})},
        "calibration": {n: [round(k, 4), round(b, 4)] for n, (k, b) in calibration.items()},
        "calibration_scale_bounds": list(rc.calibration_scale),
    })
    run_dir = rc.dir / version
    report.update(_dispose(cfg, report, new_path, run_dir, promote_ok, wait_s, shadow_minutes))
    report["seconds"] = round(time.monotonic() - t_start, 2)
    gate.write_reports(report, run_dir)
    return report


def recordings_rule(recordings: list[Path], current: str, candidate: str,
                    config_path: Path | None = None) -> tuple[gate.Rule, list[dict[str, Any]]]:
    """The gate's rule on labelled recordings: each replayed with the current and the candidate
    bundle (daemon/evaluate.evaluate, as `perceptd evaluate --gate`); a recording that cannot be
    replayed fails the rule (said why)."""
    from perceptd.daemon.bundle import BundleError
    from perceptd.daemon.evaluate import evaluate
    from perceptd.daemon.record.reader import RecordingError
    from perceptd.daemon.replay import ReplayError

    try:
        ev = evaluate(recordings, current, candidate, config_path=config_path)
    except (RecordingError, ReplayError, BundleError, OSError) as exc:
        return gate.rule_recordings(None, f"{type(exc).__name__}: {exc}")
    return gate.rule_recordings(ev)


def _split_report(cfg: Config, lab: finetune.LabelledSet, sp: blocks.BlockSplit) -> dict[str, Any]:
    """How the split was made, every block with its side and time span, and every sample's id,
    time, block and side (training, held-out, or left out by the guard)."""
    sc = cfg.samples.retrain.split
    side = {int(i): "train" for i in sp.train} | {int(i): "heldout" for i in sp.held} \
        | {int(i): "guarded" for i in sp.guarded}
    return {"by": sc.by, "block_s": sc.block_s, "per_source": sc.per_source, "guard_s": sc.guard_s,
            "min_blocks": sc.min_blocks, "holdout": cfg.samples.retrain.holdout,
            "blocks_train": sum(b["side"] == "train" for b in sp.blocks.values()),
            "blocks_heldout": sum(b["side"] == "heldout" for b in sp.blocks.values()),
            "guarded": len(sp.guarded), "blocks": sp.blocks,
            "samples": [{"id": lab.ids[i], "t": blocks._iso(lab.times[i]), "t_ns": lab.times[i],
                         "sources": lab.sources[i], "block": sp.block_of[i], "side": side[i]}
                        for i in range(len(lab))]}


def _dispose(cfg: Config, report: dict[str, Any], new_path: Path, run_dir: Path, promote_ok: bool,
             wait_s: float, shadow_minutes: float | None = None) -> dict[str, Any]:
    """Pass: keep it in the bundle folder (promote + reload, or shadow, when asked). Refused:
    move aside."""
    from perceptd.daemon.reload import promote_and_reload

    run_dir.mkdir(parents=True, exist_ok=True)
    version = report["bundle_version"]
    if not report["passed"]:
        aside = run_dir / "rejected" / version
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(new_path), aside)
        _prune_rejected(cfg.samples.retrain.dir, KEEP_REJECTED)
        failed = [r["name"] for r in report["rules"] if not r["passed"]]
        return {"promoted": False, "bundle_path": str(aside),
                "outcome": f"refused ({', '.join(failed)}); candidate kept aside in {aside}"}
    if shadow_minutes is not None:
        return {"promoted": False, "bundle_path": str(new_path),
                **shadow_candidate(cfg, version, shadow_minutes, wait_s)}
    if not promote_ok:
        return {"promoted": False, "bundle_path": str(new_path),
                "outcome": f"passed; {version} is in {new_path.parent} but not active "
                           f"(run `perceptd retrain --promote` to promote automatically)"}
    # the pointers move back at once when the daemon refuses the bundle (daemon/reload.py)
    daemon = promote_and_reload(cfg, version, wait_s)
    out: dict[str, Any] = {"promoted": not daemon.get("restored"), "bundle_path": str(new_path),
                           "daemon": daemon}
    if daemon.get("restored"):
        out["outcome"] = (f"passed but the daemon refused it ({daemon.get('detail')}); "
                          f"current stays {daemon['current']}")
    else:
        out["outcome"] = f"passed and promoted: current -> {version}; daemon {daemon['daemon']}"
    return out


def shadow_candidate(cfg: Config, version: str, minutes: float, wait_s: float = 30.0) -> dict[str, Any]:
    """`retrain --shadow MINUTES` after a passing gate: the running daemon runs `version` in
    shadow (daemon/reload.request_shadow); returns the report's `shadow` and `outcome`."""
    from perceptd.daemon.reload import request_shadow

    sh = request_shadow(cfg, version, minutes, wait_s)
    if sh["daemon"] != "shadowing":
        what = "refused the shadow" if sh["daemon"] == "refused" else f"is {sh['daemon'].replace('_', ' ')}"
        return {"shadow": sh,
                "outcome": f"passed, but no shadow runs: the daemon {what} ({sh.get('detail')}); {version} "
                           f"stays in {cfg.bundle.dir}, not active (`perceptd reload --shadow {version}` "
                           f"when a daemon runs)"}
    return {"shadow": sh,
            "outcome": f"passed; shadow of {version} {sh['state']} beside {sh['live']} for "
                       f"{float(sh['minutes']):g} min: its report with `perceptd reload --shadow-report` "
                       f"or `perceptd status`; then `perceptd reload --promote {version}`"}


def exit_code(report: dict[str, Any]) -> int:
    """0 passed (promoted, shadowing, or kept), 3 refused by the gate, 5 passed but the shadow
    asked for could not start (no daemon, or the daemon refused it)."""
    if not report["passed"]:
        return EXIT_REFUSED
    shadow = report.get("shadow")
    if shadow is not None and shadow.get("daemon") != "shadowing":
        return EXIT_SHADOW_FAILED
    return 0


def _summary(r: dict[str, Any]) -> str:
    lines = [f"gate {'PASSED' if r['passed'] else 'REFUSED'}: {r['outcome']}",
             f"  data: {r['data']['train']} train / {r['data']['heldout']} held-out labelled, "
             f"{r['data']['unlabelled']} unlabelled; trained {r['training']['epochs']} epochs on "
             f"{r['training']['nproc']} process(es) in {r['training']['seconds']} s"]
    for rule in r["rules"]:
        lines.append(f"  {'ok  ' if rule['passed'] else 'FAIL'} {rule['name']}: {rule['detail']}")
    lines.append(f"  {'event':<20} {'F1 old':>7} {'F1 new':>7}")
    for name, e in r["per_event"].items():
        lines.append(f"  {name:<20} {e['old']['f1']:>7.3f} {e['new']['f1']:>7.3f}")
    for name, t in r.get("taught", {}).items():
        hb = t["heldout_blocks"]
        f = t["f1"]
        base = (f"zero-shot {f['zero_shot']:.3f}, permuted max {f['permuted_max']}"
                if "zero_shot" in f else "no baselines")
        lines.append(f"  taught {name}: {hb['effective_pos']:g} held-out blocks of positives "
                     f"({hb['effective_neg']:g} of negatives); F1 {f['new']:.3f} vs {base}: {t['verdict']}")
    lines.append(f"  report: {r['reports']['markdown']}")
    return "\n".join(lines)


def retrain_main(args: argparse.Namespace) -> int:
    if args.shadow is not None and args.promote:
        raise UserError("--shadow and --promote do not go together: shadow first (retrain --shadow "
                        "MINUTES), then promote with `perceptd reload --promote VERSION`")
    if args.shadow is not None and not 0 < args.shadow <= 10080:
        raise UserError(f"--shadow MINUTES must be in (0, 10080], got {args.shadow:g}")
    cfg = load_config(args.config)
    if args.nproc < 1:
        raise UserError("--nproc must be >= 1")

    def echo(line: str) -> None:
        print(line, file=sys.stderr)

    report = retrain(cfg, promote_ok=args.promote, nproc=args.nproc, epochs=args.epochs, lr=args.lr,
                     seed=args.seed, device=args.device, shuffle_labels=args.shuffle_labels,
                     progress=True, wait_s=args.timeout, shadow_minutes=args.shadow,
                     recordings=args.recordings, config_path=Path(args.config),
                     echo=echo if not args.json else (lambda _line: None))
    if report is None:  # a torchrun rank other than 0
        return 0
    print(json.dumps(report, indent=2) if args.json else _summary(report))
    code = exit_code(report)
    if code == EXIT_SHADOW_FAILED:
        print(f"error: {report['outcome']}", file=sys.stderr)
    return code
