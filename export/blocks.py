"""The held-out split by time blocks: generalisation to the next views, not recall of the last.

Consecutive frames of one scene are near-identical; a split per sample puts them on both sides
and held-out F1 then measures memory.  Here whole contiguous blocks go to one side:

- `by: time`: a block is one slot of `block_s` seconds (wall clock at logging) of one source;
  `by: session`: a source's samples until a gap longer than `block_s` without any.
- `per_source`: blocks are per source id; samples that share a source in a slot join their
  slots (a camera frame fused with the microphone links the two), so a block is a connected
  group.  Without it a slot holds every source.
- held-out blocks are chosen by a hash of (seed, block key), so a block keeps its side as more
  data arrives, stratified by blocks: `holdout` of the blocks with positives of each taught
  event, and of those with its negatives (at least one each when there are two, and
  `min_blocks` when there are twice that many, so that the event can be judged).
- `guard_s`: training samples this close to a held-out sample of the same source are left out
  of training (the seam between two blocks is one scene).

`independence` counts, per taught event, the held-out blocks with a positive and with a
negative, and their effective number (Kish: (sum c)^2 / sum c^2 over per-block counts; ten
samples in one block and one in two others count as 1.4 blocks, not 3).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NS = 1_000_000_000


@dataclass
class BlockSplit:
    train: np.ndarray  # indices into the labelled set (guarded ones removed)
    held: np.ndarray
    guarded: np.ndarray  # left out of training by the guard
    block_of: list[str]  # block key per sample
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> side, times, n


def _iso(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns // NS)) + f".{(t_ns % NS) // 1_000_000:03d}Z"


def _hash(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


class _Union:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, a: Any) -> Any:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_blocks(times_ns: list[int], sources: list[list[str]], *, by: str, block_s: float,
                  per_source: bool) -> list[str]:
    """A block key per sample: `<source>@<start of its first slot or session>`."""
    block_ns = int(block_s * NS)
    srcs = [(s if per_source else ["*"]) or ["?"] for s in sources]
    node_of: list[list[tuple[str, int]]] = [[] for _ in times_ns]  # (source, start ns of slot/session)
    if by == "time":
        for i, t in enumerate(times_ns):
            node_of[i] = [(s, (t // block_ns) * block_ns) for s in srcs[i]]
    else:  # session: per source, a new block after a gap longer than block_s
        per: dict[str, list[int]] = {}
        for i, ss in enumerate(srcs):
            for s in ss:
                per.setdefault(s, []).append(i)
        for s, idx in per.items():
            idx.sort(key=lambda i: times_ns[i])
            start, last = None, None
            for i in idx:
                t = times_ns[i]
                if start is None or t - last > block_ns:
                    start = t
                last = t
                node_of[i].append((s, start))
    uf = _Union()
    for nodes in node_of:
        for n in nodes[1:]:
            uf.union(nodes[0], n)
    keys = []
    for nodes in node_of:
        src, start = uf.find(nodes[0])
        keys.append(f"{src}@{_iso(start)}")
    return keys


def split_blocks(times_ns: list[int], sources: list[list[str]], target: np.ndarray, known: np.ndarray,
                 *, holdout: float, seed: int, by: str = "time", block_s: float = 600.0,
                 per_source: bool = True, guard_s: float = 0.0, min_held: int = 0) -> BlockSplit:
    """Whole blocks to one side, stratified by blocks: for every taught event, about `holdout` of
    the blocks with its positives and of the blocks with its negatives are held out (at least
    one of each when there are two, and `min_held` when there are twice as many: enough to
    judge), and at least one block of its positives stays in training."""
    n = len(times_ns)
    keys = assign_blocks(times_ns, sources, by=by, block_s=block_s, per_source=per_source)
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    order = sorted(members, key=lambda k: _hash(seed, k))
    pos, neg = (target > 0) & known, (target == 0) & known
    taught = [e for e in range(target.shape[1]) if pos[:, e].any()]
    # strata: per taught event, the blocks with a positive and the blocks with a negative
    strata = [[k for k in order if m[members[k], e].any()] for e in taught for m in (pos, neg)]
    if not strata:  # nothing taught: every labelled block is one stratum
        strata = [order]
    want = [max(1, int(round(holdout * len(st))), min(min_held, len(st) // 2)) if len(st) >= 2 else 0
            for st in strata]
    pos_strata = strata[0::2] if taught else []
    held: set[str] = set()

    def count(i: int) -> int:
        return sum(k in held for k in strata[i])

    def allowed(k: str, strict: bool) -> bool:
        if any(k in st and len([b for b in st if b not in held]) <= 1 for st in pos_strata):
            return False  # every taught event keeps a positive block in training
        return not strict or all(count(j) < want[j] for j, st in enumerate(strata) if k in st)

    for strict in (True, False):  # first without overfilling another stratum, then as needed
        for i in sorted(range(len(strata)), key=lambda i: len(strata[i])):  # rarest first
            for k in strata[i]:
                if count(i) >= want[i]:
                    break
                if k not in held and allowed(k, strict):
                    held.add(k)
    ho = np.array(sorted(i for k in held for i in members[k]), int)
    tr_all = [i for i in range(n) if keys[i] not in held]
    guarded: list[int] = []
    if guard_s > 0 and len(ho):
        gns = guard_s * NS
        held_by_src: dict[str, np.ndarray] = {}
        for s in {s for i in ho for s in (sources[i] or ["?"])}:
            held_by_src[s] = np.array([times_ns[i] for i in ho if s in (sources[i] or ["?"])], np.int64)
        for i in tr_all:
            for s in sources[i] or ["?"]:
                near = held_by_src.get(s)
                if near is not None and np.min(np.abs(near - times_ns[i])) < gns:
                    guarded.append(i)
                    break
    tr = np.array(sorted(set(tr_all) - set(guarded)), int)
    blocks = {}
    for k in sorted(members):
        t = [times_ns[i] for i in members[k]]
        blocks[k] = {"side": "heldout" if k in held else "train", "n": len(members[k]),
                     "start": _iso(min(t)), "end": _iso(max(t)),
                     "sources": sorted({s for i in members[k] for s in sources[i]})}
    return BlockSplit(tr, ho, np.array(sorted(guarded), int), keys, blocks)


def kish(counts: list[int]) -> float:
    c = np.asarray([x for x in counts if x > 0], float)
    return float(c.sum() ** 2 / (c**2).sum()) if c.size else 0.0


def independence(block_of: list[str], target: np.ndarray, known: np.ndarray, rows: np.ndarray,
                 names: list[str], events: list[int]) -> dict[str, dict[str, Any]]:
    """Per event: held-out blocks with a positive / a negative and their effective numbers."""
    out = {}
    for e in events:
        pos: dict[str, int] = {}
        neg: dict[str, int] = {}
        for i in rows:
            if not known[i, e]:
                continue
            d = pos if target[i, e] > 0 else neg
            d[block_of[i]] = d.get(block_of[i], 0) + 1
        out[names[e]] = {"blocks_pos": len(pos), "blocks_neg": len(neg),
                         "effective_pos": round(kish(list(pos.values())), 2),
                         "effective_neg": round(kish(list(neg.values())), 2),
                         "positives": int(sum(pos.values())), "negatives": int(sum(neg.values()))}
    return out
