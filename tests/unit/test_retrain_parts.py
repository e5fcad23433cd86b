"""Pieces of the retrain loop that decide things: label semantics, the split, gate rules."""

from __future__ import annotations

import numpy as np
import torch

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.samples.config import GateConfig
from perceptd.export import finetune, gate

EVENTS = [
    EventConfig(name="cat_present", prompts=["a cat"], modalities=["vision"]),
    EventConfig(name="speech", prompts=["speech"], modalities=["audio"]),
    EventConfig(name="lights_on", kind="command", prompts=["lights on"], modalities=["text"]),
    EventConfig(name="lights_off", kind="command", prompts=["lights off"], modalities=["text"]),
]


def test_label_semantics_closed_partial_none() -> None:
    t, k = finetune._targets({"cat_present": 1}, {"control"}, EVENTS)  # a person's label: complete
    assert t.tolist() == [1, 0, 0, 0] and k.all()
    t, k = finetune._targets({"lights_on": 1}, {"command"}, EVENTS)  # a command: only its rivals
    assert t.tolist() == [0, 0, 1, 0] and k.tolist() == [False, False, True, True]
    t, k = finetune._targets({"none": 1}, {"cli"}, EVENTS)
    assert not t.any() and k.all()
    t, k = finetune._targets({"speech": 0}, {"command"}, EVENTS)  # an explicit negative
    assert k.tolist() == [False, True, False, False] and t[1] == 0


def _set(strata: list[str]) -> finetune.LabelledSet:
    n = len(strata)
    return finetune.LabelledSet([f"20260101T000000-{i:012x}" for i in range(n)],
                                np.zeros((n, 4, 384), np.float32), np.ones((n, 4), np.float32),
                                np.zeros((n, 1), np.float32), np.ones((n, 1), bool), [[]] * n, ["v"] * n,
                                strata)


def test_split_is_stratified_deterministic_and_stable() -> None:
    data = _set(["cat"] * 10 + ["none"] * 20 + ["rare"])
    tr, ho = finetune.split(data, 0.3, seed=0)
    assert sorted(np.concatenate([tr, ho]).tolist()) == list(range(31))
    held = [data.strata[i] for i in ho]
    assert held.count("cat") == 3 and held.count("none") == 6 and "rare" not in held
    tr2, ho2 = finetune.split(data, 0.3, seed=0)
    assert ho.tolist() == ho2.tolist()
    assert finetune.split(data, 0.3, seed=1)[1].tolist() != ho.tolist()
    bigger = _set(["cat"] * 10 + ["none"] * 20 + ["rare"] + ["none"] * 3)  # more data arrives
    moved = set(ho.tolist()) ^ (set(finetune.split(bigger, 0.3, seed=0)[1].tolist()) & set(range(31)))
    assert len(moved) <= 2


def test_prf_conventions() -> None:
    t, f = np.array([True, True, False]), np.array([False, False, False])
    assert gate.prf(np.array([True, False, False]), t)["f1"] == round(2 / 3, 4)
    assert gate.prf(f, f)["f1"] == 1.0  # nothing to find, nothing claimed
    assert gate.prf(np.array([True, False, False]), f)["f1"] == 0.0  # a false alarm only


def _gate(old: np.ndarray, new: np.ndarray, target: np.ndarray, latency_new: float = 1.0):
    n = len(target)
    return gate.evaluate_gate(
        names=["a", "b"], thresholds=np.array([0.5, 0.5]), target=target, known=np.ones_like(target, bool),
        old_scores=old, new_scores=new, sources=[["cam"]] * n, combos=["vision"] * n,
        parity={"x": {"max_abs_diff": 1e-7, "tolerance": 1e-4}},
        latency={"old": {"p50": 0.5, "p95": 1.0}, "new": {"p50": 0.5, "p95": latency_new}},
        cfg=GateConfig(min_slice_samples=4))


def test_gate_passes_improvements_and_names_what_regressed() -> None:
    target = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]], np.float32)
    old = np.array([[0.9, 0.1], [0.2, 0.1], [0.1, 0.9], [0.1, 0.8], [0.1, 0.1], [0.1, 0.1]])
    better = old.copy()
    better[1, 0] = 0.9
    r = _gate(old, better, target)
    assert r["passed"] and r["per_event"]["a"]["delta_f1"] > 0
    worse = old.copy()
    worse[2:4, 1] = 0.1  # b is never found any more
    r = _gate(old, worse, target)
    failed = {x["name"]: x["detail"] for x in r["rules"] if not x["passed"]}
    assert set(failed) == {"per_event_f1", "macro_f1", "slices"}
    assert "b F1 1.000 -> 0.000" in failed["per_event_f1"] and "source:cam" in failed["slices"]
    r = _gate(old, old, target, latency_new=50.0)
    assert not r["passed"] and "over budget" in r["rules"][-1]["detail"]


def _labelled(rec: str, a_wrong, a_missed, b_wrong, b_missed, tp_a: int, tp_b: int) -> dict:
    """One recording of a daemon/evaluate report, as score_labels makes it."""
    def side(wrong, missed, tp):
        fp, fn = len(wrong), len(missed)
        return {"tp": tp, "fp": fp, "fn": fn, "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / (tp + fn), 4) if tp + fn else None, "wrong": wrong, "missed": missed}
    return {"recording": rec, "labels": 3, "diff": {}, "problems": [],
            "a": side(a_wrong, a_missed, tp_a), "b": side(b_wrong, b_missed, tp_b)}


def test_recordings_rule_on_a_hand_made_evaluate_result() -> None:
    speech = {"event": "speech", "start_ns": 5_000, "end_ns": 6_000, "peak": 0.7}
    dog = {"event": "dog_present", "start_ns": 9_000, "end_ns": None, "peak": 0.9}
    cat = {"from_ns": 1_000, "to_ns": 2_000, "event": "cat_present"}
    # the candidate fixes the wrong `speech` and keeps the cat: passes, precision up
    fixed = {"recordings": [_labelled("/rec/a", [speech], [], [], [], 1, 1),
                            {"recording": "/rec/unlabelled", "diff": {}, "problems": []}]}
    rule, figs = gate.rule_recordings(fixed)
    assert rule.passed and rule.name == "recordings", rule
    assert figs[0] == {"recording": "/rec/a", "labels": 3, "added_wrong": 0, "lost_right": 0,
                       "precision": {"old": 0.5, "new": 1.0}, "recall": {"old": 1.0, "new": 1.0},
                       "wrong_added": [], "right_lost": []}
    assert figs[1] == {"recording": "/rec/unlabelled", "labels": 0}
    assert "precision 0.5 -> 1.0" in rule.detail
    # a dog where there is none and the cat lost: fails, both named with their figures
    worse = {"recordings": [_labelled("/rec/a", [speech], [], [speech, dog], [cat], 1, 0)]}
    rule, figs = gate.rule_recordings(worse)
    assert not rule.passed
    assert figs[0]["added_wrong"] == 1 and figs[0]["wrong_added"] == [dog]
    assert figs[0]["lost_right"] == 1 and figs[0]["right_lost"] == [cat]
    assert "a: 1 wrong added, 1 right lost, precision 0.5 -> 0.0, recall 1.0 -> 0.0" in rule.detail
    # nothing labelled: not judged (passes, says so); could not replay: fails
    rule, _ = gate.rule_recordings({"recordings": [{"recording": "/rec/b", "diff": {}, "problems": []}]})
    assert rule.passed and "nothing judged" in rule.detail
    rule, figs = gate.rule_recordings(None, "RecordingError: /rec/c: no meta.json")
    assert not rule.passed and "no meta.json" in rule.detail and figs == []
    # in the gate report: the rules list, the figures, the markdown table
    target = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.1], [0.1, 0.1]])
    r = gate.evaluate_gate(
        names=["a", "b"], thresholds=np.array([0.5, 0.5]), target=target, known=np.ones_like(target, bool),
        old_scores=scores, new_scores=scores, sources=[["cam"]] * 4, combos=["vision"] * 4,
        parity={"x": {"max_abs_diff": 1e-7, "tolerance": 1e-4}},
        latency={"old": {"p50": 0.5, "p95": 1.0}, "new": {"p50": 0.5, "p95": 1.0}},
        cfg=GateConfig(), recordings=gate.rule_recordings(worse))
    assert not r["passed"] and [x["name"] for x in r["rules"] if not x["passed"]] == ["recordings"]
    assert r["recordings"][0]["added_wrong"] == 1
    r.update(data={"train": 4, "heldout": 4, "unlabelled": 0}, training={"epochs": 1, "nproc": 1,
             "loss_first": 1.0, "loss_last": 0.5})
    md = gate.markdown(r)
    assert "FAIL **recordings**" in md and "| /rec/a | 3 | 1 | 1 | 0.5 | 0.0 | 1.0 | 0.0 |" in md, md


def test_adam_matches_torch() -> None:
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(5, 3))
    w2 = torch.nn.Parameter(w1.detach().clone())
    ours, ref = finetune.Adam([w1], lr=0.05), torch.optim.Adam([w2], lr=0.05)
    x = torch.randn(7, 5)
    for _ in range(20):
        for w, opt in ((w1, ours), (w2, ref)):
            opt.zero_grad()
            ((x @ w).tanh().sum() ** 2).backward()
            opt.step()
    assert torch.allclose(w1, w2, atol=1e-6)
