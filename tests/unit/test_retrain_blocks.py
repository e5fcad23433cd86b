"""The time-block split and the taught-event judgement (export/blocks.py, export/gate.py)."""

from __future__ import annotations

import numpy as np

from perceptd.daemon.samples.config import GateConfig
from perceptd.export import blocks, gate
from perceptd.export.retrain import best_threshold

S = 1_000_000_000
T0 = 1_800_000_000 * S  # 2027-01-15, a slot boundary for 10 s blocks


def _scene_stream(n_blocks: int, per_block: int, every: int = 3, block_s: float = 10.0):
    """One camera; a positive scene in every `every`-th block, samples 1 s apart inside a block."""
    times, sources, target = [], [], []
    for b in range(n_blocks):
        for j in range(per_block):
            times.append(T0 + int(b * block_s * S) + j * S)
            sources.append(["camera0"])
            target.append([1.0 if b % every == 0 else 0.0])
    return times, sources, np.array(target, np.float32), np.ones((len(times), 1), bool)


def test_whole_blocks_go_to_one_side_and_each_taught_event_is_held_out_in_blocks() -> None:
    times, sources, target, known = _scene_stream(30, 4)
    sp = blocks.split_blocks(times, sources, target, known, holdout=0.3, seed=0, block_s=10.0,
                             guard_s=0.0, min_held=3)
    train_blocks = {sp.block_of[i] for i in sp.train}
    held_blocks = {sp.block_of[i] for i in sp.held}
    assert train_blocks and held_blocks and not train_blocks & held_blocks
    # a block is one 10 s slot: every sample of a held-out slot is held out, none of a training slot
    slot = {i: (times[i] - T0) // (10 * S) for i in range(len(times))}
    assert {slot[i] for i in sp.held}.isdisjoint({slot[i] for i in sp.train})
    assert len(sp.held) + len(sp.train) == len(times)
    ind = blocks.independence(sp.block_of, target, known, sp.held, ["scene"], [0])["scene"]
    assert ind["blocks_pos"] == 3 and ind["effective_pos"] == 3.0  # round(0.3 * 10) blocks of 4
    assert ind["blocks_neg"] == 6 and ind["positives"] == 12
    assert all(v["side"] in ("train", "heldout") for v in sp.blocks.values())
    # deterministic, and a block keeps its side when more blocks arrive
    again = blocks.split_blocks(times, sources, target, known, holdout=0.3, seed=0, block_s=10.0)
    assert again.held.tolist() == sp.held.tolist()
    t2, s2, y2, k2 = _scene_stream(36, 4)
    more = blocks.split_blocks(t2, s2, y2, k2, holdout=0.3, seed=0, block_s=10.0)
    moved = {sp.block_of[i] for i in sp.held} ^ ({more.block_of[i] for i in more.held}
                                                  & {sp.block_of[i] for i in range(len(times))})
    assert len(moved) <= 2


def test_guard_leaves_the_seam_out_of_training() -> None:
    times, sources, target, known = _scene_stream(30, 10)  # samples fill each slot, 1 s apart
    sp = blocks.split_blocks(times, sources, target, known, holdout=0.3, seed=0, block_s=10.0, guard_s=2.5)
    assert len(sp.guarded) > 0
    held_t = np.array([times[i] for i in sp.held])
    for i in sp.train:
        assert np.min(np.abs(held_t - times[i])) >= 2.5 * S
    for i in sp.guarded:
        assert np.min(np.abs(held_t - times[i])) < 2.5 * S


def test_blocks_are_per_source_and_samples_sharing_a_source_join_them() -> None:
    times = [T0, T0 + S, T0 + 2 * S, T0 + 3 * S]
    sources = [["cam_a"], ["cam_b"], ["cam_b", "mic0"], ["mic0", "cam_c"]]
    keys = blocks.assign_blocks(times, sources, by="time", block_s=10.0, per_source=True)
    assert keys[0] != keys[1] and keys[1] == keys[2] == keys[3]  # cam_b - mic0 - cam_c linked
    keys = blocks.assign_blocks(times, sources, by="time", block_s=10.0, per_source=False)
    assert len(set(keys)) == 1
    # sessions: a gap longer than block_s starts a new block
    t = [T0, T0 + 5 * S, T0 + 9 * S, T0 + 30 * S, T0 + 33 * S]
    keys = blocks.assign_blocks(t, [["cam"]] * 5, by="session", block_s=10.0, per_source=True)
    assert keys[0] == keys[1] == keys[2] != keys[3] == keys[4]


def test_effective_number_of_blocks() -> None:
    assert blocks.kish([5, 5, 5]) == 3.0
    assert round(blocks.kish([10, 1, 1]), 2) == 1.41  # one block dominates: not three
    assert blocks.kish([]) == 0.0


def test_best_threshold_ignores_float_noise() -> None:
    # a positive and a negative 1e-5 apart are one value: no threshold may split them
    t, f1 = best_threshold(np.array([0.30001, 0.30000, 0.9, 0.1]), np.array([True, False, True, False]))
    assert f1 < 1.0 and t <= 0.3 + 1e-3


def _judge(new_f1_scores: np.ndarray, perm_max: float, zs: float):
    names = ["my_pet"]
    target = np.array([[1], [1], [0], [0]], np.float32)
    known = np.ones((4, 1), bool)
    base = {"my_pet": {"zero_shot": {"threshold": 0.5, "f1_train": zs, "heldout": {"f1": zs}},
                       "permuted": {"runs": 3, "f1": [perm_max, 0.0, 0.0], "max_f1": perm_max,
                                    "mean_f1": perm_max / 3, "heldout": []}}}
    ind = {"my_pet": {"blocks_pos": 3, "blocks_neg": 3, "effective_pos": 3.0, "effective_neg": 3.0,
                      "judged": True}}
    taught = gate.judge_taught(names=names, thresholds=np.array([0.5]), target=target, known=known,
                               old_scores=np.zeros((4, 1)), new_scores=new_f1_scores[:, None],
                               baselines=base, independence=ind, cfg=GateConfig())
    return taught, gate._rule_baselines(taught)


def test_a_taught_event_must_beat_its_baselines() -> None:
    perfect = np.array([0.9, 0.8, 0.1, 0.2])
    taught, rule = _judge(perfect, perm_max=0.5, zs=1.0)
    assert rule.passed and taught["my_pet"]["verdict"] == "pass"
    assert taught["my_pet"]["scores"]["new"]["positives"]["n"] == 2
    assert taught["my_pet"]["scores"]["new"]["positives"]["hist"][8] == 1  # 0.8 in [0.8, 0.9)
    # F1 0.8 (one false positive) against permuted labels at 0.75: not 0.1 better
    one_fp = np.array([0.9, 0.8, 0.6, 0.2])
    taught, rule = _judge(one_fp, perm_max=0.75, zs=0.5)
    assert not rule.passed and "label-permutation baseline" in rule.detail
    assert taught["my_pet"]["required"]["permuted"] == 0.85
    # permuted labels within 0.1 of the ceiling: the bar is capped at a perfect F1, which the
    # perfect head reaches and the one with a false positive does not
    for perm in (0.95, 1.0):
        taught, rule = _judge(perfect, perm_max=perm, zs=1.0)
        assert rule.passed and taught["my_pet"]["verdict"] == "pass", perm
        assert taught["my_pet"]["required"]["permuted"] == 1.0
        taught, rule = _judge(one_fp, perm_max=perm, zs=0.5)
        assert not rule.passed and "capped at F1 1.0" in rule.detail, rule.detail
    # below the zero-shot prompt at its best threshold
    half = np.array([0.9, 0.1, 0.1, 0.2])
    taught, rule = _judge(half, perm_max=0.0, zs=1.0)
    assert not rule.passed and "zero-shot prompt" in rule.detail
