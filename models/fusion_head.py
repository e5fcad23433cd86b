"""The fusion head: per-modality evidence in log-odds, combined by reliability.

Every modality reports evidence for every event as a log-odds ``l_em`` (how much more likely
the event is given what that modality saw):

* vision and audio: from the classifier classes that *mean* the event (compiled once per
  vocabulary: ``rel_*`` [E,C] relevance of each class to each event, ``coverage`` [E,M] how
  well the classifier can see the event at all).  ImageNet classes are exclusive, so vision
  evidence is the probability mass on the event's classes; AudioSet tags are multi-label, so
  audio evidence is the best relevant tag.  ``l = clip(a_m (logit(c) - logit(t_m)), -neg_m,
  pos)``: a classifier that confidently sees something else speaks against the event, but
  only as far as its modality can rule things out (a silent room does not disprove a cat);
* text for command events: the command matcher's verdict (``text_evidence``, log-odds);
* everything else (faces, free text for state events, classes that cannot see an event):
  the adapted shared-space vector, standardised against a background set, as a log-odds
  ``gamma z - delta``.  Fine-tuning trains these adapters and a per-modality gain that adds
  the vector path to the class path, so retraining can teach what no class names;
* an event combines its present modalities as declared (``combine`` [E,3] one-hot):
  ``sum`` (default: agreement adds up, a confident contradiction outweighs a weak vote),
  ``any`` (the strongest modality decides), ``all`` (the weakest decides);
* rivals (one competition group) are separated: an event below its best rival + margin
  loses what it lacks, times 10;
* the score is ``sigmoid(k_e L + b_e)``, with (k_e, b_e) the per-event calibration that
  fine-tuning learns ((1, 0) by default);
* the published weight of a modality is its share of the absolute evidence: the modality
  that decided carries the weight, whichever way it spoke.

Events, prompts and class relevances are inputs, not weights, so a user adds an event by
writing a sentence.  An absent modality gets weight exactly 0 and changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("vision", "face", "audio", "text")
DIM = 384
N_VISION_CLASSES = 1000
N_AUDIO_CLASSES = 521
COMBINE_MODES = ("sum", "any", "all")
_V, _F, _A, _T = range(4)


class ResidualAdapter(nn.Module):
    """x + B(A x): low rank, B starts at zero so the untrained head is the zero-shot one."""

    def __init__(self, dim: int = DIM, rank: int = 16) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.normal_(self.down.weight, std=dim**-0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x + self.up(self.down(x)), dim=-1, eps=1e-6)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


class FusionHead(nn.Module):
    """(x, mask, probs_vision, probs_audio, text_evidence, queries, prompt_mask, allowed, calib,
    event_affine, competes, margin, required, rel_vision, rel_audio, coverage, from_matcher,
    combine) -> scores, weights, modality_scores, fused."""

    def __init__(self, n_modalities: int = len(MODALITIES), dim: int = DIM, rank: int = 16) -> None:
        super().__init__()
        self.adapters = nn.ModuleList([ResidualAdapter(dim, rank) for _ in range(n_modalities)])
        self.gamma = nn.Parameter(torch.tensor(1.0))  # vector path: standardised z -> log-odds
        self.delta = nn.Parameter(torch.tensor(3.0))  # z = 3 sigma -> even odds
        # vector path added to the class path (vision, audio); 0: classes alone decide
        self.vector_gain = nn.Parameter(torch.zeros(n_modalities))
        # class path: per modality slope, neutral probability, caps (log-odds)
        self.register_buffer("class_slope", torch.tensor([1.0, 0.0, 1.0, 0.0]))
        self.register_buffer("class_neutral", torch.tensor([0.35, 0.5, 0.5, 0.5]))
        # a camera sees its field of view, a microphone hears the room: what one modality does
        # not see speaks only this much against an event another modality confidently shows
        self.register_buffer("neg_cap", torch.tensor([1.5, 4.0, 1.0, 6.0]))
        self.register_buffer("pos_cap", torch.tensor(6.0))
        self.register_buffer("contrast", torch.tensor(10.0))  # log-odds lost per unit shortfall

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """[B,M,D] -> [B,M,D] adapted and normalised per modality."""
        return torch.stack([a(x[:, i]) for i, a in enumerate(self.adapters)], dim=1)

    def vector_z(self, a: torch.Tensor, queries: torch.Tensor, prompt_mask: torch.Tensor,
                 calib: torch.Tensor) -> torch.Tensor:
        """Standardised best-prompt similarity of the adapted vectors, z [B,E,M]."""
        sim = torch.einsum("bmd,epd->bemp", a, queries)
        sim = sim + (prompt_mask[None, :, None, :] - 1.0) * 1e4  # padded prompts never win
        best = sim.max(dim=-1).values
        return (best - calib[None, :, :, 0]) / calib[None, :, :, 1].clamp(min=1e-3)

    def class_logodds(self, probs_vision: torch.Tensor, probs_audio: torch.Tensor,
                      rel_vision: torch.Tensor, rel_audio: torch.Tensor) -> torch.Tensor:
        """Evidence from the classes that mean each event: [B,E,2] (vision, audio)."""
        mass = probs_vision @ rel_vision.T  # [B,E] exclusive classes: probability mass
        tag = (probs_audio[:, None, :] * rel_audio[None]).max(-1).values  # [B,E] multi-label
        c = torch.stack([mass, tag], dim=-1)
        idx = torch.tensor([_V, _A])
        slope, neutral = self.class_slope[idx], self.class_neutral[idx]
        lo = slope * (_logit(c) - _logit(neutral))
        lo = torch.minimum(torch.maximum(lo, -self.neg_cap[idx]), self.pos_cap)
        seen = torch.stack([probs_vision.sum(-1), probs_audio.sum(-1)], -1) > 0  # [B,2]
        return lo * seen[:, None, :].to(lo.dtype)  # no probabilities (old samples): neutral

    def evidence(self, x: torch.Tensor, probs_vision: torch.Tensor, probs_audio: torch.Tensor,
                 text_evidence: torch.Tensor, queries: torch.Tensor, prompt_mask: torch.Tensor,
                 calib: torch.Tensor, rel_vision: torch.Tensor, rel_audio: torch.Tensor,
                 coverage: torch.Tensor, from_matcher: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per event and modality log-odds l [B,E,M], and the adapted vectors a [B,M,D]."""
        a = self.adapt(x)
        z = self.vector_z(a, queries, prompt_mask, calib)
        vec = self.gamma * z - self.delta  # [B,E,M]
        vec = torch.minimum(torch.maximum(vec, -self.neg_cap), self.pos_cap)
        cls = self.class_logodds(probs_vision, probs_audio, rel_vision, rel_audio)  # [B,E,2]
        cls_full = torch.zeros_like(vec)
        cls_full = torch.cat([cls[..., :1], cls_full[..., 1:2], cls[..., 1:2], cls_full[..., 3:]], -1)
        cov = coverage[None]  # [1,E,M]; 0 for face and text
        gain = self.vector_gain[None, None, :]
        l_class = cov * cls_full + (1.0 - cov) * vec + cov * gain * vec
        txt = text_evidence.clamp(-self.pos_cap, self.pos_cap)  # [B,E]
        fm = from_matcher[None, :]
        l_text = fm * txt + (1.0 - fm) * l_class[..., _T]
        lo = torch.cat([l_class[..., :_T], l_text[..., None]], dim=-1)
        return lo, a

    def forward(self, x: torch.Tensor, mask: torch.Tensor, probs_vision: torch.Tensor,
                probs_audio: torch.Tensor, text_evidence: torch.Tensor, queries: torch.Tensor,
                prompt_mask: torch.Tensor, allowed: torch.Tensor, calib: torch.Tensor,
                event_affine: torch.Tensor, competes: torch.Tensor, margin: torch.Tensor,
                required: torch.Tensor, rel_vision: torch.Tensor, rel_audio: torch.Tensor,
                coverage: torch.Tensor, from_matcher: torch.Tensor, combine: torch.Tensor):
        lo, a = self.evidence(x, probs_vision, probs_audio, text_evidence, queries, prompt_mask,
                              calib, rel_vision, rel_audio, coverage, from_matcher)
        use = mask[:, None, :] * allowed[None, :, :]  # [B,E,M]
        # an event whose required modality is absent cannot fire (a command needs its text)
        req_ok = (1.0 - required[None, :, :] * (1.0 - mask[:, None, :])).prod(-1)  # [B,E]
        any_used = (use.sum(-1) > 0).to(lo.dtype) * req_ok
        lo_used = lo * use
        total = lo_used.sum(-1)
        strongest = (lo + (use - 1.0) * 1e4).max(-1).values
        weakest = (lo - (use - 1.0) * 1e4).min(-1).values
        fused = combine[None, :, 0] * total + combine[None, :, 1] * strongest \
            + combine[None, :, 2] * weakest
        fused = torch.where(any_used > 0, fused, torch.zeros_like(fused))
        rivals = fused[:, None, :] + (competes[None, :, :] - 1.0) * 1e4  # [B,E,E']
        bar = rivals.max(-1).values + margin[None, :]
        fused = fused + self.contrast * torch.clamp(fused - bar, max=0.0)
        k, b = event_affine[None, :, 0], event_affine[None, :, 1]
        scores = torch.sigmoid(k * fused + b) * any_used
        share = lo_used.abs() * use + use * 1e-6  # ties (all zero): equal weights
        w = share / share.sum(-1, keepdim=True).clamp(min=1e-9) * any_used[..., None]
        modality_scores = torch.sigmoid(k[..., None] * lo + b[..., None]) * use * req_ok[..., None]
        fused_vec = torch.einsum("bem,bmd->bed", w, a)
        return scores, w, modality_scores, fused_vec


def load_fusion_head(state: dict | None = None) -> FusionHead:
    head = FusionHead()
    if state is not None:
        head.load_state_dict(state)
    return head.eval()
