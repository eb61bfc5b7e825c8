"""MAML (the paper's reference [9]) with domains as meta-tasks: the head of the backbone — the
deep tower's last hidden layer and the logit layer — adapts to each domain by inner gradient
steps; everything below it is meta-learned only (docs/competitors.md, "MAML").

For the rows of a domain d in a batch, split alternately into a support half S_d and a query
half Q_d (a domain with one row uses it for both), with the head's parameters θ_h:

    θ_d^(0) = θ_h,   θ_d^(k+1) = θ_d^(k) − η ∇_θ L_{S_d}(θ_d^(k))      (``inner_steps`` times)
    meta-loss = mean over the batch's query rows of L(x; θ_d^(K))

L is the binary cross-entropy of eq. 1, L_{S_d} its mean over S_d. First-order (the default)
treats θ_d^(K) − θ_h as a constant, so ∂(meta-loss)/∂θ_h is the query gradient at the adapted
head; second-order differentiates through the inner steps.

At evaluation a row of domain d is scored with the head adapted on d's *support rows*: the last
``support_rows`` train rows of d that the model saw in training (a ring buffer per domain,
filled from training batches only, so dev and test labels never reach it). Domains that own no
row of the buffer (the shared row 0: rare and unseen domains) are scored with the meta-learned
head.

The head is computed for every row with its own domain's parameters, gathered per row: the
same code serves the two backbones, DNN (logit on the last hidden layer) and DCNv2 (logit on
[cross output, last hidden layer]; the logit layer's cross part adapts too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasparse.config import MamlConfig
from adasparse.layers.domain_index import DomainIndex, distinct_domains

ADAPT_CHUNK_VALUES = 1 << 24  # evaluation adapts domains in chunks of about this many per-row head values
Head = list[torch.Tensor]  # [W1 (G, N_L, N_{L-1}), b1 (G, N_L), w2 (G, in_logit), b2 (G,)]


def head_logits(z: torch.Tensor, c: torch.Tensor | None, params: Head, group: torch.Tensor) -> torch.Tensor:
    """The head for each row with its group's parameters: tanh(W1 z + b1), then the logit layer
    on [c, that] (c the DCNv2 cross output, None on the DNN); (B,)."""
    w1, b1, w2, b2 = (p.index_select(0, group) for p in params)
    a = torch.tanh(torch.einsum("bj,bij->bi", z, w1) + b1)
    u = a if c is None else torch.cat([c, a], dim=1)
    return (u * w2).sum(dim=1) + b2


def adapt(params: Head, z: torch.Tensor, c: torch.Tensor | None, labels: torch.Tensor, group: torch.Tensor,
          groups: int, steps: int, lr: float, first_order: bool) -> Head:
    """θ_g after ``steps`` SGD steps of size ``lr`` on each group's mean support loss.

    ``params`` are the shared head (no group axis); rows (z, c, labels) belong to ``group`` in
    [0, groups). First-order: the result is θ + (θ_g − θ).detach(); otherwise it keeps the graph
    of the inner steps."""
    rows = torch.bincount(group, minlength=groups).clamp_(min=1).to(z.dtype)
    weight = 1.0 / rows.index_select(0, group)  # each group's loss is its own mean
    with torch.enable_grad():
        if first_order:
            z, c = z.detach(), None if c is None else c.detach()
            cur = [p.detach().unsqueeze(0).repeat(groups, *([1] * p.dim())).requires_grad_() for p in params]
        else:
            cur = [p.unsqueeze(0).repeat(groups, *([1] * p.dim())) for p in params]
        for _ in range(steps):
            loss = (F.binary_cross_entropy_with_logits(head_logits(z, c, cur, group), labels, reduction="none") * weight).sum()
            grads = torch.autograd.grad(loss, cur, create_graph=not first_order)
            cur = [p - lr * g for p, g in zip(cur, grads)]
            if first_order:
                cur = [p.detach().requires_grad_() for p in cur]
    if first_order:
        return [p.unsqueeze(0) + (q.detach() - p.detach().unsqueeze(0)) for p, q in zip(params, cur)]
    return cur


def rank_in_group(inverse: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each row's position among the rows of its group, in batch order (0, 1, ...)."""
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(inverse)
    rank[order] = torch.arange(inverse.numel(), device=inverse.device) - starts.index_select(0, inverse.index_select(0, order))
    return rank


def head_params(backbone: nn.Module) -> Head:
    """The head MAML adapts: the deep tower's last hidden layer and the logit layer."""
    deep, logit = backbone.deep.layers[-1], backbone.logit
    return [deep.weight, deep.bias, logit.weight.squeeze(0), logit.bias.squeeze(0)]


def support_query(inverse: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the support and query rows: a domain's rows alternate (in batch order) between
    support and query; a domain with one row has it in both."""
    pos = rank_in_group(inverse, counts)
    single = counts.index_select(0, inverse) == 1
    return (pos % 2 == 0) | single, (pos % 2 == 1) | single


class MamlArch(nn.Module):
    """The per-domain support buffers and the MAML configuration; the head's parameters are the
    backbone's own last hidden layer and logit layer."""

    def __init__(self, num_fields: int, num_numeric: int, domain_buckets: list[int], slots: int, cfg: MamlConfig):
        super().__init__()
        self.cfg = cfg
        self.index = DomainIndex(domain_buckets, slots)
        s = cfg.support_rows
        self.register_buffer("support_cat", torch.zeros(slots, s, num_fields, dtype=torch.int64))
        self.register_buffer("support_numeric", torch.zeros(slots, s, num_numeric))
        self.register_buffer("support_label", torch.zeros(slots, s))
        self.register_buffer("support_seen", torch.zeros(slots, dtype=torch.int64))  # rows written per slot

    @torch.no_grad()
    def remember(self, cat_ids: torch.Tensor, numeric: torch.Tensor | None, labels: torch.Tensor, slots: torch.Tensor) -> None:
        """Write a training batch's rows into their domains' ring buffers (the last
        ``support_rows`` rows of each domain stay); rows of the shared slot 0 are not kept."""
        s = self.cfg.support_rows
        own = slots > 0
        if not bool(own.any()):
            return
        idx = own.nonzero().squeeze(1)
        slot = slots.index_select(0, idx)
        uniq, inverse, counts = torch.unique(slot, return_inverse=True, return_counts=True)
        rank = rank_in_group(inverse, counts)
        n = counts.index_select(0, inverse)
        keep = rank >= n - s  # only a domain's last support_rows rows of the batch: one write per position
        idx, slot, rank = idx[keep], slot[keep], rank[keep]
        pos = (self.support_seen.index_select(0, slot) + rank) % s  # the domain's k-th row sits at k mod s
        self.support_cat[slot, pos] = cat_ids.index_select(0, idx)
        if numeric is not None and numeric.shape[1]:
            self.support_numeric[slot, pos] = numeric.index_select(0, idx).to(self.support_numeric.dtype)
        self.support_label[slot, pos] = labels.index_select(0, idx).to(self.support_label.dtype)
        self.support_seen.index_add_(0, uniq, counts)

    def support(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The buffered rows of every slot that has any: (slot ids (G,), cat_ids, numeric, labels,
        group of each row in [0, G))."""
        s = self.cfg.support_rows
        filled = torch.minimum(self.support_seen, torch.full_like(self.support_seen, s))
        filled[0] = 0
        slots = (filled > 0).nonzero().squeeze(1)
        valid = torch.arange(s, device=filled.device).unsqueeze(0) < filled.index_select(0, slots).unsqueeze(1)
        group = torch.arange(slots.numel(), device=filled.device).unsqueeze(1).expand(-1, s)[valid]
        return (slots, self.support_cat.index_select(0, slots)[valid], self.support_numeric.index_select(0, slots)[valid],
                self.support_label.index_select(0, slots)[valid], group)


class MamlContext:
    """MAML's work for one batch: ``linear`` captures the head's inputs (z, the input of the last
    hidden layer; c, the cross output the logit layer also reads) while the backbone runs with
    the meta-learned head."""

    def __init__(self, arch: MamlArch, backbone: nn.Module, domain_ids: torch.Tensor, radix: torch.Tensor | None):
        self.arch, self.backbone, self.domain_ids, self.radix = arch, backbone, domain_ids, radix
        self.last = len(backbone.deep.layers) - 1
        self.z: torch.Tensor | None = None
        self.c: torch.Tensor | None = None
        self.cat_ids: torch.Tensor | None = None
        self.numeric: torch.Tensor | None = None

    def linear(self, i: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if i == self.last:
            self.z = h
        elif i == self.last + 1:
            width = self.backbone.deep.out_dim
            self.c = h[:, :-width] if h.shape[1] > width else None
        return layer(h)

    def meta_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """The batch's mean query loss with each domain's adapted head (training)."""
        cfg = self.arch.cfg
        inverse, _, counts = distinct_domains(self.domain_ids, self.radix)
        support, query = support_query(inverse, counts)
        params = head_params(self.backbone)
        labels = labels.to(self.z.dtype)
        s_idx = support.nonzero().squeeze(1)
        sel = (lambda t, i: None if t is None else t.index_select(0, i))
        adapted = adapt(params, self.z.index_select(0, s_idx), sel(self.c, s_idx), labels.index_select(0, s_idx),
                        inverse.index_select(0, s_idx), counts.numel(), cfg.inner_steps, cfg.inner_lr, cfg.first_order)
        q_idx = query.nonzero().squeeze(1)
        logits = head_logits(self.z.index_select(0, q_idx), sel(self.c, q_idx), adapted, inverse.index_select(0, q_idx))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.index_select(0, q_idx).float())


__all__ = ["MamlArch", "MamlContext", "adapt", "head_logits", "head_params", "rank_in_group", "support_query"]
