"""Compare two bundles on recordings: event-level differences, and precision/recall where a
recording carries time-range labels (`perceptd label-range`, labels.jsonl)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perceptd.daemon.inference.models import ModelSet
from perceptd.daemon.record.reader import Recording, RecordingError
from perceptd.daemon.replay import (
    ReplayReport,
    Schedule,
    load_replay_models,
    replay_config,
    replay_recording,
)

NS = 1_000_000_000
LABELS = "labels.jsonl"


@dataclass(frozen=True)
class Occurrence:
    event: str
    start_ns: int
    end_ns: int | None
    peak: float


def occurrences(events: Sequence[dict[str, Any]]) -> list[Occurrence]:
    """start ... end spans per event, from a replay's event messages (in order)."""
    open_: dict[str, tuple[int, float]] = {}
    out: list[Occurrence] = []
    for m in events:
        name = m["event"]
        if m["phase"] == "start":
            open_[name] = (int(m["t_capture_ns"]), float(m["score"]))
        elif name in open_:
            start, peak = open_[name]
            peak = max(peak, float(m["score"]))
            if m["phase"] == "end":
                out.append(Occurrence(name, start, int(m["t_capture_ns"]), peak))
                del open_[name]
            else:
                open_[name] = (start, peak)
    out += [Occurrence(n, s, None, p) for n, (s, p) in open_.items()]
    return sorted(out, key=lambda o: (o.start_ns, o.event))


def diff(a: list[Occurrence], b: list[Occurrence], shift_ns: int) -> dict[str, list[dict[str, Any]]]:
    """Match B's occurrences to A's (same event, nearest start within `shift_ns`)."""
    unmatched = list(a)
    same, shifted, added = [], [], []
    for ob in b:
        cands = [oa for oa in unmatched
                 if oa.event == ob.event and abs(oa.start_ns - ob.start_ns) <= shift_ns]
        if not cands:
            added.append(_occ(ob))
            continue
        oa = min(cands, key=lambda o: abs(o.start_ns - ob.start_ns))
        unmatched.remove(oa)
        d = ob.start_ns - oa.start_ns
        (shifted if d else same).append({**_occ(ob), "shift_ms": round(d / 1e6, 3)})
    return {"same": same, "shifted": shifted, "added": added, "removed": [_occ(o) for o in unmatched]}


def _occ(o: Occurrence) -> dict[str, Any]:
    return {"event": o.event, "start_ns": o.start_ns, "end_ns": o.end_ns, "peak": round(o.peak, 6)}


def read_labels(rec: Recording) -> list[dict[str, Any]]:
    p = rec.path / LABELS
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            d = json.loads(line)
            out.append({"from_ns": int(d["from_ns"]), "to_ns": int(d["to_ns"]), "event": str(d["event"])})
        except (ValueError, KeyError, TypeError):
            continue
    return out


def label_range(path: Path, from_s: float, to_s: float, event: str) -> dict[str, Any]:
    """Label [from_s, to_s] (seconds from the recording's start) as `event`, or `none` (no
    event should fire there).  Appends to labels.jsonl; returns the label written."""
    rec = Recording(path)
    if to_s <= from_s:
        raise RecordingError(f"label-range: --to ({to_s}) must be after --from ({from_s})")
    names = [str(e.get("name")) for e in (rec.meta.get("config") or {}).get("events", [])]
    if names and event != "none" and event not in names:
        raise RecordingError(f"label-range: {event!r} is no event of this recording's config "
                             f"({', '.join(names)}) nor 'none'")
    t0 = int(rec.meta.get("started_mono_ns", 0))
    label = {"from_ns": t0 + int(from_s * NS), "to_ns": t0 + int(to_s * NS), "event": event,
             "from_s": from_s, "to_s": to_s}
    with (rec.path / LABELS).open("a") as f:
        f.write(json.dumps(label) + "\n")
    return label


def score_labels(occ: list[Occurrence], labels: list[dict[str, Any]]) -> dict[str, Any]:
    """An occurrence starting inside a range labelled with its event is right, inside a range
    labelled otherwise (or `none`) wrong; a range of an event with no such start is missed.
    Occurrences outside every labelled range are not judged."""
    tp = fp = 0
    wrong: list[dict[str, Any]] = []
    for o in occ:
        hits = [lab for lab in labels if lab["from_ns"] <= o.start_ns <= lab["to_ns"]]
        if not hits:
            continue
        if any(lab["event"] == o.event for lab in hits):
            tp += 1
        else:
            fp += 1
            wrong.append(_occ(o))
    missed = [lab for lab in labels if lab["event"] != "none" and not any(
        o.event == lab["event"] and lab["from_ns"] <= o.start_ns <= lab["to_ns"] for o in occ)]
    fn = len(missed)
    return {"tp": tp, "fp": fp, "fn": fn,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "wrong": wrong, "missed": missed}


def evaluate(recordings: Sequence[Path], bundle_a: str, bundle_b: str, *,
             config_path: Path | None = None, schedule: Schedule = "auto",
             shift_ns: int = NS) -> dict[str, Any]:
    out: dict[str, Any] = {"bundle_a": bundle_a, "bundle_b": bundle_b, "recordings": []}
    totals: dict[str, float] = {"added": 0, "removed": 0, "shifted": 0, "same": 0}
    loaded: dict[str, ModelSet] = {}  # each bundle loads once for every recording

    def models(path: Path, version: str) -> ModelSet:
        if version not in loaded:
            loaded[version] = load_replay_models(replay_config(Recording(path), config_path, version))
        return loaded[version]

    for path in recordings:
        reps: list[ReplayReport] = [
            replay_recording(path, config_path=config_path, bundle=v, schedule=schedule,
                             keep_messages=True, models=models(path, v)) for v in (bundle_a, bundle_b)]
        occ_a, occ_b = (occurrences(r.events) for r in reps)
        d = diff(occ_a, occ_b, shift_ns)
        for k in totals:
            totals[k] += len(d[k])
        entry: dict[str, Any] = {"recording": reps[0].recording, "diff": d,
                                 "versions": [r.bundle_version for r in reps],
                                 "problems": reps[0].problems}
        labels = read_labels(Recording(path))
        if labels:
            entry["labels"] = len(labels)
            entry["a"] = score_labels(occ_a, labels)
            entry["b"] = score_labels(occ_b, labels)
        out["recordings"].append(entry)
    matched = totals["same"] + totals["shifted"]
    # agreement: occurrences both bundles have (shifted included) over all occurrences either has
    union = matched + totals["added"] + totals["removed"]
    totals["agreement"] = round(matched / union, 4) if union else 1.0
    out["totals"] = totals
    out["gate"] = gate_verdict(out)
    return out


def label_changes(entry: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """On one labelled recording of an evaluate report: the wrong occurrences B adds (a wrong
    event A did not have wrong there) and the labelled ranges B misses that A found."""
    a, b = entry["a"], entry["b"]
    known = {(o["event"], o["start_ns"]) for o in a["wrong"]}
    added = [o for o in b["wrong"] if (o["event"], o["start_ns"]) not in known
             and not any(w["event"] == o["event"] for w in a["wrong"])]
    missed_a = {(m["event"], m["from_ns"]) for m in a["missed"]}
    lost = [m for m in b["missed"] if (m["event"], m["from_ns"]) not in missed_a]
    return added, lost


def gate_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The retrain gate's rule on labelled recordings: the candidate (B) must not add a wrong
    event nor lose a right one that the baseline (A) had.  `ok` is None without labels."""
    reasons: list[str] = []
    judged = False
    for e in report["recordings"]:
        if "a" not in e:
            continue
        judged = True
        added, lost = label_changes(e)
        reasons += [f"{e['recording']}: adds a wrong {o['event']} at {o['start_ns']}" for o in added]
        reasons += [f"{e['recording']}: loses {m['event']} in [{m['from_ns']}, {m['to_ns']}] that A found"
                    for m in lost]
    return {"ok": (not reasons) if judged else None, "reasons": reasons}


def format_report(r: dict[str, Any]) -> str:
    lines = [f"bundle A {r['bundle_a']} vs B {r['bundle_b']}: "
             + ", ".join(f"{k} {v}" for k, v in r["totals"].items())]
    g = r.get("gate") or {}
    if g.get("ok") is not None:
        lines.append("gate: " + ("passes (no wrong event added, no right one lost)" if g["ok"]
                                 else "refuses: " + "; ".join(g["reasons"])))
    for e in r["recordings"]:
        lines.append(f"{e['recording']}:")
        for kind in ("added", "removed", "shifted"):
            for o in e["diff"][kind]:
                extra = f" by {o['shift_ms']} ms" if kind == "shifted" else ""
                lines.append(f"  {kind} {o['event']} at {o['start_ns']}{extra} (peak {o['peak']})")
        for side in ("a", "b"):
            if side in e:
                s = e[side]
                lines.append(f"  {side.upper()}: precision {s['precision']} recall {s['recall']} "
                             f"(tp {s['tp']}, fp {s['fp']}, fn {s['fn']})")
        for p in e["problems"]:
            lines.append(f"  skipped: {p}")
    return "\n".join(lines)
