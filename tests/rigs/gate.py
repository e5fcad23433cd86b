"""Checks on a retrain gate report that several tests share."""

from __future__ import annotations

from typing import Any


def check_time_blocks(r: dict[str, Any], min_blocks: int = 3) -> None:
    """No held-out sample shares a time block, nor a slot of block_s of one of its sources, with a
    training sample; the ids and times in the report say so on their own."""
    sp = r["split"]
    by_id = {s["id"]: s for s in sp["samples"]}
    held = [s for s in sp["samples"] if s["side"] == "heldout"]
    train = [s for s in sp["samples"] if s["side"] == "train"]
    assert sorted(s["id"] for s in held) == sorted(r["data"]["heldout_ids"])
    assert len(train) == r["data"]["train"] and len(held) == r["data"]["heldout"]
    assert {s["block"] for s in held}.isdisjoint({s["block"] for s in train})
    if sp["by"] == "time":
        slot_ns = int(sp["block_s"] * 10**9)
        held_slots = {(src, s["t_ns"] // slot_ns) for s in held for src in s["sources"]}
        train_slots = {(src, s["t_ns"] // slot_ns) for s in train for src in s["sources"]}
        assert held_slots.isdisjoint(train_slots)
    guard_ns = sp["guard_s"] * 10**9
    for h in held:  # the guard: no training sample of the same source within guard_s
        for t in train:
            if set(h["sources"]) & set(t["sources"]):
                assert abs(h["t_ns"] - t["t_ns"]) >= guard_ns, (h, t)
    for sid in r["data"]["heldout_ids"]:  # the id carries the wall time it was logged at
        assert by_id[sid]["t"].replace("-", "").replace(":", "")[:15] == sid[:15]
    assert sp["blocks_heldout"] >= min_blocks and sp["blocks_train"] >= min_blocks
