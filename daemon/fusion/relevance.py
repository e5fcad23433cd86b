"""Which classifier classes mean an event: compiled once per vocabulary, in the text space.

A tagger that hears a dog says "Dog 0.9, Animal 0.9, Domestic animals 0.8": mixing every class
into one vector lands near every animal prompt.  So the evidence for an event comes only from
the classes that are clearly the event's:

* every class is compared with the event's prompts (best cosine over prompts, MiniLM space);
* the event's anchors are the classes within ``spread`` of its best class (and above a floor);
* AudioSet: the anchors' descendants in the ontology join them (Cat -> Meow, Purr; not Hiss,
  which is also a snake's and steam's), so
  does a specific parent close to the event, alone ("a dog barking": Bark, and Dog), and a
  generic ancestor is dropped when a more specific selected class matches better
  (Animal, "Domestic animals, pets" never count for a cat);
* coverage says how well the classifier can see the event at all (its best class's cosine,
  mapped to [0, 1]): ImageNet has no "person" and AudioSet no "light switch", and a modality
  that cannot name an event must neither prove nor disprove it from classes.
"""

from __future__ import annotations

import numpy as np

COVERAGE_LOW = 0.45  # best class cosine at which a classifier starts to see an event
COVERAGE_FULL = 0.6  # ... and from which it sees it fully
AGREE_LOW = 0.3  # an anchor's cosine under every class text
PARENT_LOW = 0.55  # an anchor's ontology parent joins when this close to the event ...
SPECIFIC_MAX = 12  # ... and specific (a sound source such as Dog, not Animal)
EXCLUSIVE_TIE = 0.02  # two events within this of a class both keep it
SPREAD = {"vision": 0.1, "audio": 0.1}


def prompt_similarity(class_vecs: np.ndarray, queries: np.ndarray, prompt_mask: np.ndarray
                      ) -> np.ndarray:
    """[E,P,C]: the cosine of every class vector with every prompt (-inf for padding)."""
    sims = np.einsum("cd,epd->epc", class_vecs, queries)
    return np.where(prompt_mask[:, :, None] > 0, sims, -np.inf)


def class_similarity(class_vecs: np.ndarray, queries: np.ndarray, prompt_mask: np.ndarray
                     ) -> np.ndarray:
    """[E,C]: per event, the best prompt cosine of every class vector."""
    return prompt_similarity(class_vecs, queries, prompt_mask).max(1)


def coverage(sim: np.ndarray) -> np.ndarray:
    """[E,C] similarities -> [E] in [0, 1]."""
    return np.clip((sim.max(-1) - COVERAGE_LOW) / (COVERAGE_FULL - COVERAGE_LOW), 0.0, 1.0)


def _descendants(children: dict[str, list[str]]) -> dict[str, set[str]]:
    memo: dict[str, set[str]] = {}

    def walk(name: str, seen: frozenset[str]) -> set[str]:
        if name in memo:
            return memo[name]
        out: set[str] = set()
        for c in children.get(name, []):
            if c not in seen:  # the ontology is a DAG; guard anyway
                out |= {c} | walk(c, seen | {c})
        memo[name] = out
        return out

    for n in children:
        walk(n, frozenset({n}))
    return memo


def relevance(sims: list[np.ndarray], labels: list[str], spread: float,
              children: dict[str, list[str]] | None = None,
              active: np.ndarray | None = None) -> np.ndarray:
    """[E,C] 0/1: the classes that mean each event (see the module docstring).

    `sims` are one or more [E,P,C] similarity tables (`prompt_similarity`) of the same classes
    under different texts (plain names, descriptions): a class is an anchor when it is near the
    top for one of the event's prompts under any text ("a car", "a bus" and "a bicycle" each
    bring their own classes) and not far off under all texts ("hot dog" is a dog by name).  `active` [E] marks
    the events that may use this classifier; a class two of them claim stays with the one it
    matches best (a doorbell is the doorbell event's, not the alarm's)."""
    best_of = np.maximum.reduce([t.max(1) for t in sims])  # [E,C]
    worst_of = np.minimum.reduce([t.max(1) for t in sims])
    rel = np.zeros(best_of.shape, np.float32)
    desc = _descendants(children) if children else {}
    parents: dict[str, list[str]] = {}
    for parent, kids in (children or {}).items():
        for k in kids:
            parents.setdefault(k, []).append(parent)
    index = {n: i for i, n in enumerate(labels)}

    def below(c: int) -> set[int]:
        return {index[d] for d in desc.get(labels[c], ()) if d in index}

    for e in range(best_of.shape[0]):
        near = np.zeros(best_of.shape[1], bool)
        for table in sims:
            for row in table[e]:
                top = float(row.max())
                if np.isfinite(top):
                    near |= (row >= top - spread) & (row >= COVERAGE_LOW)
        anchors = set(np.flatnonzero(near & (worst_of[e] >= AGREE_LOW)).tolist())
        s = best_of[e]
        sources = set()  # "a dog barking": Bark, and its specific sound source Dog (alone)
        for a in anchors:
            for parent in parents.get(labels[a], ()):
                p = index.get(parent)
                if p is not None and s[p] >= PARENT_LOW and len(desc.get(parent, ())) <= SPECIFIC_MAX:
                    sources.add(p)
        # a generic ancestor of a better-matching anchor goes (Animal for "a cow mooing")
        anchors = {c for c in anchors if not any(s[b] > s[c] for b in below(c) & anchors)}
        family: set[int] = set()
        for a in anchors:
            family |= below(a)
        # a child that also belongs elsewhere is ambiguous (Hiss: a cat's, a snake's, steam's)
        inside = {labels[c] for c in anchors | family}
        family = {d for d in family
                  if all(p in inside or p not in index for p in parents.get(labels[d], ()))}
        chosen = set(anchors) | sources | family
        rel[e, sorted(chosen)] = 1.0
    if active is not None:
        rel *= np.asarray(active, np.float32)[:, None]
    claimed = np.where(rel > 0, best_of, -np.inf)
    owner = claimed.max(0, keepdims=True)
    rel *= (claimed >= owner - EXCLUSIVE_TIE).astype(np.float32)
    return rel


def top_classes(rel: np.ndarray, sim: np.ndarray, labels: list[str], k: int = 8
                ) -> list[list[str]]:
    """Per event, its chosen classes, best first (explanations, `perceptd probe`)."""
    out = []
    for r, s in zip(rel, sim, strict=True):
        idx = np.flatnonzero(r)
        out.append([labels[i] for i in idx[np.argsort(-s[idx])][:k]])
    return out
