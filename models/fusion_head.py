"""The fusion head: attention over present modalities with the event prompt as the query.

Every modality arrives as a vector in the shared MiniLM space.  Per event e and modality m:

* the modality's vector goes through a small residual adapter (zero at init, trained by
  fine-tuning) and is L2-normalised: a_m;
* its similarity to the event is the best cosine over the event's prompts: s_em;
* that similarity is standardised against a background set of the same modality (mu, sigma
  come in as an input, computed on the device from the bundle's background vectors), which
  makes a text cosine and an image cosine comparable: z_em = (s_em - mu_em) / sigma_em;
* polarity: events in one competition group (e.g. all commands) are separated by raw
  cosine, which ranks "switch the lamp off" right where standardised scores do not: an event
  that does not beat its group's runner-up by `margin`, or is below its similarity floor, loses
  contrast * (shortfall) from z_em, so "lights_on" does not fire beside "lights_off";
* attention weights w_em = softmax over present and allowed modalities of alpha*z_em + beta_m;
* the fused evidence z_e = sum_m w_em z_em, the score sigmoid(gamma*(k_e*z_e) - delta + b_e),
  where (k_e, b_e) is the per-event calibration that fine-tuning learns (1, 0 by default);
* an event may require a modality (commands require text): without it the score is 0;
* the fused vector sum_m w_em a_m is returned for logging and explanation.

Events and prompts are inputs, not weights, so a user adds an event by writing a sentence.
An absent modality gets weight exactly 0 and cannot change anything, since it is masked out.
"""

from __future__ import annotations

import torch
from torch import nn

MODALITIES = ("vision", "face", "audio", "text")
DIM = 384


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


class FusionHead(nn.Module):
    """(x, mask, queries, prompt_mask, allowed, calib, event_affine, competes, floor, margin,
    required)
    -> scores, weights, modality_scores, fused."""

    def __init__(self, n_modalities: int = len(MODALITIES), dim: int = DIM, rank: int = 16) -> None:
        super().__init__()
        self.adapters = nn.ModuleList([ResidualAdapter(dim, rank) for _ in range(n_modalities)])
        self.alpha = nn.Parameter(torch.tensor(1.0))  # attention sharpness on evidence
        self.beta = nn.Parameter(torch.zeros(n_modalities))  # per-modality prior
        self.gamma = nn.Parameter(torch.tensor(1.0))  # evidence -> logit scale
        self.delta = nn.Parameter(torch.tensor(3.0))  # logit offset: z = 3 sigma -> 0.5
        self.register_buffer("contrast", torch.tensor(150.0))  # z lost per unit of cosine shortfall

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """[B,M,D] -> [B,M,D] adapted and normalised per modality."""
        return torch.stack([a(x[:, i]) for i, a in enumerate(self.adapters)], dim=1)

    def evidence(self, a: torch.Tensor, queries: torch.Tensor, prompt_mask: torch.Tensor,
                 calib: torch.Tensor, competes: torch.Tensor, floor: torch.Tensor,
                 margin: torch.Tensor) -> torch.Tensor:
        """Standardised best-prompt similarity z [B,E,M], minus the polarity shortfall."""
        sim = torch.einsum("bmd,epd->bemp", a, queries)
        sim = sim + (prompt_mask[None, :, None, :] - 1.0) * 1e4  # padded prompts never win
        best = sim.max(dim=-1).values  # [B,E,M]
        z = (best - calib[None, :, :, 0]) / calib[None, :, :, 1].clamp(min=1e-3)
        rivals = best[:, None, :, :] + (competes[None, :, :, None] - 1.0) * 1e4  # [B,E,E',M]
        bar = torch.maximum(rivals.max(dim=2).values + margin[None, :, None], floor[None, :, None])
        return z + self.contrast * torch.clamp(best - bar, max=0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor,
                prompt_mask: torch.Tensor, allowed: torch.Tensor, calib: torch.Tensor,
                event_affine: torch.Tensor, competes: torch.Tensor, floor: torch.Tensor,
                margin: torch.Tensor, required: torch.Tensor):
        a = self.adapt(x)
        z = self.evidence(a, queries, prompt_mask, calib, competes, floor, margin)
        use = mask[:, None, :] * allowed[None, :, :]  # [B,E,M]
        logits = self.alpha * z + self.beta[None, None, :]
        logits = logits + (use - 1.0) * 1e4
        w = torch.softmax(logits, dim=-1) * use
        # an event whose required modality is absent cannot fire (a command needs its text)
        req_ok = (1.0 - required[None, :, :] * (1.0 - mask[:, None, :])).prod(-1, keepdim=True)
        any_used = (use.sum(-1, keepdim=True) > 0).to(w.dtype) * req_ok
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-9) * any_used
        fused_z = (w * z).sum(-1)
        k, b = event_affine[None, :, 0], event_affine[None, :, 1]
        scores = torch.sigmoid(self.gamma * k * fused_z - self.delta + b) * any_used[..., 0]
        modality_scores = torch.sigmoid(self.gamma * k[..., None] * z - self.delta + b[..., None])
        modality_scores = modality_scores * use * req_ok
        fused = torch.einsum("bem,bmd->bed", w, a)
        return scores, w, modality_scores, fused


def load_fusion_head(state: dict | None = None) -> FusionHead:
    head = FusionHead()
    if state is not None:
        head.load_state_dict(state)
    return head.eval()
