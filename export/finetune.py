"""Fine-tune the fusion head on logged samples (PyTorch; encoders stay frozen).

What trains: the residual adapters, alpha/beta/gamma/delta and the per-event calibration
(k, b) that the daemon reads from `calibration.json`.  The inputs are exactly what the
daemon's head sees: the logged shared-space vectors x [M, D] with their mask, and the event
space compiled from the configuration like the daemon does (daemon/fusion/space.py).

Loss = BCE on labels (per-event positive weighting)
     + InfoNCE between each present modality's adapted vector and the event prompts
     + distillation: events without labelled positives keep the current head's scores on
       unlabelled samples (and unknown label entries); taught events follow their labels
     + a pull towards the current weights (other events keep what already works).

Data parallel (`nproc > 1`, or under torchrun; torch.distributed, gloo on CPU, nccl on GPU):
every rank holds the data set, takes a strided shard of each mini-batch, and each loss term
is normalised by its *global* count, so the all-reduced, averaged gradient equals the
single-process one; only summation order differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perceptd.daemon.events.config import EventConfig
from perceptd.daemon.fusion.space import MODALITIES, EventSpace
from perceptd.daemon.samples.config import RetrainConfig
from perceptd.daemon.samples.store import NONE_LABEL, SampleStore
from perceptd.export.targets.fusion import INPUTS as HEAD_INPUTS
from perceptd.export.targets.fusion import ROW_INPUTS
from perceptd.models.fusion_head import (
    N_AUDIO_CLASSES,
    N_VISION_CLASSES,
    FusionHead,
    load_fusion_head,
)

log = logging.getLogger(__name__)
PARTIAL_SOURCES = {"command"}  # labels that say only "this is E", not "and nothing else"
# the head's per-vocabulary inputs besides the trained calibration, in its argument order
SPACE_FIELDS = tuple(n for n in HEAD_INPUTS if n not in (*ROW_INPUTS, "event_affine"))
AUX_WIDTH = N_VISION_CLASSES + N_AUDIO_CLASSES  # + one command log-odds per event


def pack_aux(vision_probs: np.ndarray | None, audio_probs: np.ndarray | None,
             commands: dict[str, float], names: list[str]) -> np.ndarray:
    """A sample's per-row head inputs besides x and mask, as one vector: the classifiers'
    probabilities (zeros where not logged: the class path is then neutral) and the command
    matcher's log-odds in event order."""
    out = np.zeros(AUX_WIDTH + len(names), np.float32)
    if vision_probs is not None and vision_probs.shape == (N_VISION_CLASSES,):
        out[:N_VISION_CLASSES] = vision_probs
    if audio_probs is not None and audio_probs.shape == (N_AUDIO_CLASSES,):
        out[N_VISION_CLASSES:AUX_WIDTH] = audio_probs
    for i, n in enumerate(names):
        out[AUX_WIDTH + i] = float(commands.get(n, 0.0))
    return out


def unpack_aux(aux: Any) -> tuple[Any, Any, Any]:
    """[N, AUX_WIDTH + E] (numpy or torch) -> probs_vision, probs_audio, text_evidence."""
    return aux[:, :N_VISION_CLASSES], aux[:, N_VISION_CLASSES:AUX_WIDTH], aux[:, AUX_WIDTH:]


# --------------------------------------------------------------------------- data


@dataclass
class LabelledSet:
    """Labelled samples as arrays; `known` marks which (sample, event) targets are labels."""

    ids: list[str]
    x: np.ndarray  # [N,M,D]
    mask: np.ndarray  # [N,M]
    target: np.ndarray  # [N,E] 0/1
    known: np.ndarray  # [N,E] bool
    sources: list[list[str]]  # source ids per sample (slices)
    combos: list[str]  # modality combination per sample (slices)
    strata: list[str]  # positive labels joined (the split is stratified on this)
    times: list[int] = field(default_factory=list)  # wall clock ns when logged (the time-block split)
    aux: np.ndarray | None = None  # [N, AUX_WIDTH + E] class probabilities + command log-odds

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray | list[int]) -> LabelledSet:
        idx = list(idx)
        return LabelledSet([self.ids[i] for i in idx], self.x[idx], self.mask[idx], self.target[idx],
                           self.known[idx], [self.sources[i] for i in idx],
                           [self.combos[i] for i in idx], [self.strata[i] for i in idx],
                           [self.times[i] for i in idx] if self.times else [],
                           None if self.aux is None else self.aux[idx])

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The head's per-row inputs: x, mask, probs_vision, probs_audio, text_evidence."""
        aux = self.aux if self.aux is not None else np.zeros(
            (len(self.ids), AUX_WIDTH + self.target.shape[1]), np.float32)
        return (self.x, self.mask, *unpack_aux(aux))


@dataclass
class SampleData:
    labelled: LabelledSet
    unlabelled_x: np.ndarray  # [U,M,D]
    unlabelled_mask: np.ndarray  # [U,M]
    skipped: dict[str, int] = field(default_factory=dict)  # why samples were left out
    unlabelled_aux: np.ndarray | None = None  # [U, AUX_WIDTH + E] (pack_aux)


def _targets(labels: dict[str, int], label_sources: set[str], events: list[EventConfig]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Human labels are closed-world (unlisted events are absent); a command's automatic
    label is partial: it only rules out the command's rivals (same competition group)."""
    names = [e.name for e in events]
    target = np.zeros(len(events), np.float32)
    known = np.zeros(len(events), bool)
    if labels.get(NONE_LABEL) == 1:
        known[:] = True
        return target, known
    closed = bool(label_sources - PARTIAL_SOURCES)
    groups = {e.name: e.effective_group for e in events}
    pos_groups = {groups[n] for n, v in labels.items() if v == 1 and n in groups and groups[n]}
    for i, name in enumerate(names):
        if name in labels:
            target[i], known[i] = float(labels[name]), True
        elif closed or groups[name] in pos_groups:
            known[i] = True
    return target, known


def load_samples(store: SampleStore, events: list[EventConfig], encoder_fp: str,
                 max_unlabelled: int) -> SampleData:
    """Every usable sample of the store: made by these encoders, with a present modality."""
    names = {e.name for e in events}
    label_sources = store.label_sources()
    skipped: dict[str, int] = {}
    rows: list[tuple[Any, ...]] = []
    ux: list[np.ndarray] = []
    um: list[np.ndarray] = []
    ua: list[np.ndarray] = []
    order = [e.name for e in events]
    for info in store.list(newest_first=True):
        labelled = bool(info.labels)
        if info.encoder_fp != encoder_fp:
            skipped["other_encoders"] = skipped.get("other_encoders", 0) + 1
            continue
        if not labelled and len(ux) >= max_unlabelled:
            continue
        try:
            s = store.get(info.id)
        except Exception as exc:  # noqa: BLE001 - a damaged file costs one sample, not the run
            log.warning("event=sample_unreadable sample=%s error=%s", info.id, exc)
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            continue
        if tuple(s.modality_names) != MODALITIES or not s.mask.any():
            skipped["no_modality"] = skipped.get("no_modality", 0) + 1
            continue
        aux = pack_aux(s.vision_probs, s.audio_probs, s.commands, order)
        if not labelled:
            ux.append(s.x)
            um.append(s.mask)
            ua.append(aux)
            continue
        labels = {k: v for k, v in s.labels.items() if k in names or k == NONE_LABEL}
        if not labels:
            skipped["labels_not_configured"] = skipped.get("labels_not_configured", 0) + 1
            continue
        target, known = _targets(labels, label_sources.get(s.id, set()), events)
        stratum = "+".join(sorted(k for k, v in labels.items() if v == 1 and k != NONE_LABEL)) or "none"
        rows.append((s.id, s.x, s.mask, target, known, sorted(set(s.sources.values())), s.combo, stratum,
                     int(s.created_ns), aux))
    rows.sort(key=lambda r: r[0])
    d = 384
    e = len(events)
    lab = LabelledSet(
        ids=[r[0] for r in rows],
        x=np.stack([r[1] for r in rows]) if rows else np.zeros((0, len(MODALITIES), d), np.float32),
        mask=np.stack([r[2] for r in rows]) if rows else np.zeros((0, len(MODALITIES)), np.float32),
        target=np.stack([r[3] for r in rows]) if rows else np.zeros((0, e), np.float32),
        known=np.stack([r[4] for r in rows]) if rows else np.zeros((0, e), bool),
        sources=[r[5] for r in rows], combos=[r[6] for r in rows], strata=[r[7] for r in rows],
        times=[r[8] for r in rows],
        aux=np.stack([r[9] for r in rows]) if rows else np.zeros((0, AUX_WIDTH + e), np.float32),
    )
    unl_x = np.stack(ux) if ux else np.zeros((0, len(MODALITIES), d), np.float32)
    unl_m = np.stack(um) if um else np.zeros((0, len(MODALITIES)), np.float32)
    unl_a = np.stack(ua) if ua else np.zeros((0, AUX_WIDTH + e), np.float32)
    return SampleData(lab, unl_x, unl_m, skipped, unl_a)


def split(data: LabelledSet, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified and deterministic: within each stratum samples are ordered by a hash of
    (seed, id), so a sample keeps its side as more samples arrive."""
    train, held = [], []
    by: dict[str, list[int]] = {}
    for i, s in enumerate(data.strata):
        by.setdefault(s, []).append(i)
    for _stratum, idx in sorted(by.items()):
        idx.sort(key=lambda i: hashlib.sha256(f"{seed}:{data.ids[i]}".encode()).hexdigest())
        n_hold = int(round(holdout * len(idx))) if len(idx) >= 2 else 0
        n_hold = min(max(n_hold, 1 if len(idx) >= 2 else 0), len(idx) - 1) if idx else 0
        held += idx[:n_hold]
        train += idx[n_hold:]
    return np.array(sorted(train), int), np.array(sorted(held), int)


def usable(mask: np.ndarray, space: dict[str, np.ndarray]) -> np.ndarray:
    """[N,E]: the head can score event e on sample n (a modality of e present, required ones too)."""
    use = mask[:, None, :] * space["allowed"][None]
    req_ok = (1.0 - space["required"][None] * (1.0 - mask[:, None, :])).prod(-1)
    return (use.sum(-1) > 0) & (req_ok > 0)


def space_arrays(space: EventSpace) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(space, k), np.float32) for k in SPACE_FIELDS}


# --------------------------------------------------------------------------- model


class Trainable(nn.Module):
    """The head plus the per-event calibration it normally receives as an input."""

    def __init__(self, head: FusionHead, affine: np.ndarray, space: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.head = head
        self.affine = nn.Parameter(torch.from_numpy(np.array(affine, np.float32)))
        for k, v in space.items():
            self.register_buffer(k, torch.from_numpy(np.array(v, np.float32)), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, aux: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if aux is None:
            aux = torch.zeros((x.shape[0], AUX_WIDTH + self.allowed.shape[0]), dtype=x.dtype,
                              device=x.device)
        rows = dict(zip(ROW_INPUTS, (x, mask, *unpack_aux(aux)), strict=True))
        args = [self.affine if n == "event_affine" else rows[n] if n in rows else getattr(self, n)
                for n in HEAD_INPUTS]
        scores = self.head(*args)[0]
        return scores, self.head.adapt(x)


def initial_head(state: dict[str, np.ndarray] | None, seed: int) -> FusionHead:
    torch.manual_seed(seed)
    if state is None:
        return load_fusion_head(None).train()
    return load_fusion_head({k: torch.from_numpy(np.array(v)) for k, v in state.items()}).train()


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    affine: np.ndarray  # [E,2]
    history: list[float]  # mean loss per epoch (global)
    world_size: int = 1


@dataclass
class TrainInputs:
    """Everything a rank needs (picklable: spawned workers receive it)."""

    x: np.ndarray
    mask: np.ndarray
    target: np.ndarray
    known: np.ndarray
    ux: np.ndarray
    umask: np.ndarray
    space: dict[str, np.ndarray]
    affine: np.ndarray
    base_state: dict[str, np.ndarray] | None
    cfg: dict[str, Any]  # RetrainConfig fields used here
    aux: np.ndarray | None = None  # [N, AUX_WIDTH + E] (pack_aux); None: zeros (neutral)
    uaux: np.ndarray | None = None  # [U, AUX_WIDTH + E]

    def __post_init__(self) -> None:
        width = AUX_WIDTH + self.target.shape[1]
        if self.aux is None:
            self.aux = np.zeros((len(self.x), width), np.float32)
        if self.uaux is None:
            self.uaux = np.zeros((len(self.ux), width), np.float32)


def _losses(inner: Trainable, batch: dict[str, torch.Tensor], counts: dict[str, float],
            world: int, cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the three data terms on this rank's shard, each over its global count (x world:
    gradients are averaged over ranks)."""
    n_l = batch["x"].shape[0]
    x = torch.cat([batch["x"], batch["ux"]])
    mask = torch.cat([batch["mask"], batch["umask"]])
    aux = torch.cat([batch["aux"], batch["uaux"]])
    scores, a = inner(x, mask, aux)
    p = scores.clamp(1e-6, 1 - 1e-6)
    lab = p[:n_l]
    total = torch.zeros((), dtype=p.dtype, device=p.device)
    if counts["bce"] > 0 and n_l:
        w = batch["bce_w"]
        t = batch["target"]
        bce = -(t * torch.log(lab) + (1 - t) * torch.log(1 - lab)) * w
        total = total + bce.sum() / counts["bce"]
    if counts["distill"] > 0:
        q_all = torch.cat([batch["old_l"], batch["old_u"]])
        w_all = torch.cat([batch["dist_l"], batch["dist_u"]])
        q = q_all.clamp(1e-6, 1 - 1e-6)
        kl = (q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))) * w_all
        total = total + cfg["distill_weight"] * kl.sum() / counts["distill"]
    if counts["nce"] > 0 and n_l:
        total = total + cfg["infonce_weight"] * _infonce(inner, a[:n_l], batch) / counts["nce"]
    return total * world, scores


def _infonce(inner: Trainable, a: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each (sample, positive event, present allowed modality): the adapted vector must match its
    event's best prompt better than every other event's it may also stand for."""
    pos = batch["nce_pos"]  # [B,E] 1 where (n, e) is a known positive
    if pos.sum() == 0:
        return torch.zeros((), dtype=a.dtype, device=a.device)
    sim = torch.einsum("bmd,epd->bemp", a, inner.queries)
    sim = sim + (inner.prompt_mask[None, :, None, :] - 1.0) * 1e4
    best = sim.max(-1).values / batch["tau"]  # [B,E,M]
    allowed = inner.allowed.T[None]  # [1,M,E]
    present = batch["mask"][:, :, None] > 0  # [B,M,1]
    logits = best.permute(0, 2, 1)  # [B,M,E]
    other_pos = pos[:, None, :] > 0  # other positives are not negatives
    total = torch.zeros((), dtype=a.dtype, device=a.device)
    for e in torch.nonzero(pos.sum(0)).flatten().tolist():
        rows = (pos[:, e] > 0)[:, None] & present[:, :, 0] & (allowed[:, :, e] > 0)  # [B,M]
        if not rows.any():
            continue
        cand = (allowed > 0) & ~other_pos
        cand[..., e] = True
        lg = logits.masked_fill(~cand.expand_as(logits), -1e4)
        lse = torch.logsumexp(lg, -1)  # [B,M]
        total = total + ((lse - logits[..., e]) * rows).sum()
    return total


def _anchor(inner: Trainable, anchor: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    reg = torch.zeros((), device=inner.affine.device)
    for name, p in inner.named_parameters():
        reg = reg + ((p - anchor[name]) ** 2).sum()
    return weight * reg


def _precompute(inp: TrainInputs, inner: Trainable) -> dict[str, np.ndarray]:
    """Fixed per-sample tensors: loss weights and the current head's scores (distillation)."""
    use_l = usable(inp.mask, inp.space)
    use_u = usable(inp.umask, inp.space) if len(inp.umask) else np.zeros((0, inp.target.shape[1]), bool)
    bce_mask = inp.known & use_l
    pos = (inp.target > 0) & bce_mask
    neg = (inp.target == 0) & bce_mask
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    pos_w = np.clip(n_neg / np.maximum(n_pos, 1), 1.0, 20.0)
    keep = n_pos == 0  # distil only events nobody is teaching: labels define the taught ones
    bce_w = np.where(pos, pos_w[None], 0.0) + np.where(neg, 1.0, 0.0)
    with torch.no_grad():
        old_l = inner(torch.from_numpy(inp.x), torch.from_numpy(inp.mask),
                      torch.from_numpy(inp.aux))[0].numpy() if len(inp.x) \
            else np.zeros_like(inp.target)
        old_u = inner(torch.from_numpy(inp.ux), torch.from_numpy(inp.umask),
                      torch.from_numpy(inp.uaux))[0].numpy() if len(inp.ux) \
            else np.zeros((0, inp.target.shape[1]), np.float32)
    return {
        "bce_w": bce_w.astype(np.float32), "nce_pos": pos.astype(np.float32),
        "old_l": old_l.astype(np.float32), "old_u": old_u.astype(np.float32),
        "dist_l": ((~inp.known) & use_l & keep[None]).astype(np.float32),
        "dist_u": (use_u & keep[None]).astype(np.float32),
    }


def _batches(n_l: int, n_u: int, batch_size: int, epoch: int,
             seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same schedule on every rank: labelled batches and an unlabelled slice each."""
    rng = np.random.default_rng(seed * 100_003 + epoch)
    perm = rng.permutation(n_l)
    uperm = rng.permutation(n_u) if n_u else np.zeros(0, int)
    steps = max(1, -(-n_l // batch_size))
    out = []
    for s in range(steps):
        li = perm[s * batch_size:(s + 1) * batch_size]
        ui = uperm[s * batch_size:(s + 1) * batch_size] if n_u else uperm
        out.append((li, ui))
    return out


def _nce_count(pos: np.ndarray, mask: np.ndarray, allowed: np.ndarray) -> float:
    return float(np.einsum("be,bm,em->", pos, (mask > 0).astype(np.float32), allowed))


class Adam:
    """Plain Adam (Kingma & Ba), identical on every rank.  torch.optim's first step imports
    torch._dynamo (~2 s per process), which dominates a retrain of a few hundred samples."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(self.lr * (m / c1) / ((v / c2).sqrt() + self.eps))


def _device(cfg: dict[str, Any], rank: int, world: int) -> torch.device:
    if cfg.get("device", "cpu") != "cuda":
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else 0
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def train(inp: TrainInputs, *, rank: int = 0, world: int = 1, progress: bool = True) -> TrainResult:
    """The training loop; with world > 1 the process group must already exist."""
    cfg = inp.cfg
    torch.set_num_threads(1)  # tiny tensors: more threads only add contention
    dev = _device(cfg, rank, world)
    head = initial_head(inp.base_state, cfg["seed"])
    inner = Trainable(head, inp.affine, inp.space)
    if cfg.get("shuffle_labels"):  # sanity check: labels permuted across samples
        perm = np.random.default_rng(cfg["seed"] + 1).permutation(len(inp.target))
        inp = dataclasses.replace(inp, target=inp.target[perm], known=inp.known[perm])
    pre = _precompute(inp, inner)
    inner.to(dev)
    anchor = {k: v.detach().clone() for k, v in inner.named_parameters()}
    params = list(inner.parameters())
    if world > 1:
        _broadcast(params)
    opt = Adam(params, lr=cfg["lr"])
    t = {k: torch.from_numpy(v).to(dev) for k, v in pre.items()}
    data = {"x": torch.from_numpy(inp.x).to(dev), "mask": torch.from_numpy(inp.mask).to(dev),
            "target": torch.from_numpy(inp.target).to(dev), "ux": torch.from_numpy(inp.ux).to(dev),
            "umask": torch.from_numpy(inp.umask).to(dev), "aux": torch.from_numpy(inp.aux).to(dev),
            "uaux": torch.from_numpy(inp.uaux).to(dev)}
    tau = torch.tensor(cfg["infonce_temperature"], device=dev)
    history: list[float] = []
    bar = _progress(cfg["epochs"], rank == 0 and progress)
    for epoch in range(cfg["epochs"]):
        epoch_loss, steps = torch.zeros((), device=dev), 0
        for li, ui in _batches(len(inp.x), len(inp.ux), cfg["batch_size"], epoch, cfg["seed"]):
            counts = {
                "bce": float(pre["bce_w"][li].sum()),
                "distill": float(pre["dist_l"][li].sum() + (pre["dist_u"][ui].sum() if len(ui) else 0)),
                "nce": _nce_count(pre["nce_pos"][li], inp.mask[li], inp.space["allowed"]),
            }
            mine_l = torch.from_numpy(li[rank::world]).to(dev)
            mine_u = torch.from_numpy(ui[rank::world]).to(dev)
            batch = {
                "x": data["x"][mine_l], "mask": data["mask"][mine_l], "target": data["target"][mine_l],
                "ux": data["ux"][mine_u], "umask": data["umask"][mine_u],
                "aux": data["aux"][mine_l], "uaux": data["uaux"][mine_u],
                "bce_w": t["bce_w"][mine_l], "nce_pos": t["nce_pos"][mine_l],
                "old_l": t["old_l"][mine_l], "old_u": t["old_u"][mine_u],
                "dist_l": t["dist_l"][mine_l], "dist_u": t["dist_u"][mine_u],
                "tau": tau,
            }
            opt.zero_grad()
            data_loss, _ = _losses(inner, batch, counts, world, cfg)
            reg = _anchor(inner, anchor, cfg["weight_decay"])
            (data_loss + reg).backward()
            if world > 1:
                _average_gradients(params, world)
            opt.step()
            _bound_scale(inner, cfg.get("calibration_scale"))
            epoch_loss = epoch_loss + data_loss.detach() / world + reg.detach() / world
            steps += 1
        if world > 1:  # one collective per epoch for the logged loss
            import torch.distributed as dist

            dist.all_reduce(epoch_loss)
        history.append(float(epoch_loss) / max(1, steps))
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()
    state = {k: v.detach().cpu().clone() for k, v in inner.head.state_dict().items()}
    return TrainResult(state, inner.affine.detach().cpu().numpy().copy(), history, world)


def _bound_scale(inner: Trainable, bounds: tuple[float, float] | None) -> None:
    """Projected step: the per-event calibration scale k stays in [lo, hi], so a few samples
    cannot turn an event into a step function."""
    if bounds is not None:
        with torch.no_grad():
            inner.affine[:, 0].clamp_(float(bounds[0]), float(bounds[1]))


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="retrain", unit="epoch", disable=not enabled or None, leave=False)


# --------------------------------------------------------------------------- data parallel


def _broadcast(params: list[nn.Parameter]) -> None:
    """Every rank starts from rank 0's weights."""
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, 0)


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """All-reduce every gradient in one flat buffer and average: what DistributedDataParallel
    does, without its start-up cost (it imports the compiler stack, ~3 s per rank)."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _worker(rank: int, world: int, init_file: str, inp: TrainInputs, out: str, backend: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = train(inp, rank=rank, world=world)
        if rank == 0:
            # tensors and floats only, so the parent can load it with weights_only=True (no pickle)
            torch.save({"state": res.state, "affine": torch.from_numpy(res.affine),
                        "history": [float(h) for h in res.history]}, out)
    finally:
        dist.destroy_process_group()


def train_parallel(inp: TrainInputs, nproc: int, backend: str = "gloo") -> TrainResult:
    """Spawn `nproc` ranks on this machine (gloo on CPU, nccl on GPUs) and train data-parallel."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="perceptd-ddp-") as tmp:
        init_file, out = str(Path(tmp) / "init"), str(Path(tmp) / "result.pt")
        mp.spawn(_worker, args=(nproc, init_file, inp, out, backend), nprocs=nproc, join=True)
        res = torch.load(out, weights_only=True)
    return TrainResult(res["state"], res["affine"].numpy(), res["history"], nproc)


def torchrun_env() -> tuple[int, int] | None:
    """(rank, world) when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), world


def run_training(inp: TrainInputs, nproc: int, backend: str,
                 progress: bool = True) -> TrainResult | None:
    """Single process, spawned ranks, or (under torchrun) this rank; None on ranks != 0."""
    env = torchrun_env()
    if env is not None:
        import torch.distributed as dist

        rank, world = env
        dist.init_process_group(backend, init_method="env://")
        try:
            res = train(inp, rank=rank, world=world, progress=progress)
        finally:
            dist.destroy_process_group()
        return res if rank == 0 else None
    if nproc > 1:
        return train_parallel(inp, nproc, backend)
    return train(inp, progress=progress)


def train_config(cfg: RetrainConfig, **overrides: Any) -> dict[str, Any]:
    out = {k: getattr(cfg, k) for k in ("seed", "epochs", "batch_size", "lr", "weight_decay",
                                        "infonce_weight", "infonce_temperature", "distill_weight",
                                        "calibration_scale")}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def load_state_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}

