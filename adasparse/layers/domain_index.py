"""Per-domain parameter rows: which row of a per-domain table a batch row uses.

Models with parameters of their own per domain (STAR's W_d^l; docs/competitors.md) index them
by the domain, the tuple of domain-aware field ids. The train split's domains with enough rows
get a row each (``assign``, from the vocabulary); every other domain — rare in train, or never
seen — uses row 0, which the rare domains train, so an unseen domain gets trained parameters
(the same rule as the vocabulary's out-of-vocabulary id). The assigned tuples are a buffer of
the model: saved with it, so a checkpoint serves with the rows it was trained with.
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse.portable.domain_keys import KEY_LIMIT, key_radix


def mixed_radix(domain_buckets: list[int]) -> torch.Tensor | None:
    """:func:`adasparse.portable.domain_keys.key_radix` as a tensor (the one derivation of the
    domain key; None when Π buckets reaches its limit, 2^63)."""
    radix = key_radix(domain_buckets)
    return None if radix is None else torch.from_numpy(radix)


def distinct_domains(domain_ids: torch.Tensor, radix: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inverse, representative row, count) of the distinct domain-field tuples of a batch."""
    if domain_ids.shape[1] == 1:
        key = domain_ids[:, 0]
    elif radix is not None:
        key = (domain_ids * radix).sum(dim=1)
    else:
        key = None
    if key is not None:
        uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    else:
        uniq, inverse, counts = torch.unique(domain_ids, dim=0, return_inverse=True, return_counts=True)
    rep = torch.empty(uniq.shape[0], dtype=torch.int64, device=domain_ids.device)
    rep.scatter_(0, inverse, torch.arange(domain_ids.shape[0], device=domain_ids.device))
    return inverse, rep, counts


class DomainIndex(nn.Module):
    """Maps (B, k) domain-field ids to rows in [0, slots): row 0 shared, rows 1.. one domain each."""

    def __init__(self, domain_buckets: list[int], slots: int):
        super().__init__()
        radix = mixed_radix(domain_buckets)
        if radix is None:
            raise ValueError(f"per-domain parameters need the domain fields' sizes to multiply below {KEY_LIMIT:.3g} (2^63)")
        self.register_buffer("radix", radix, persistent=False)
        self.slots = slots
        # the sorted keys of the domains that own rows 1..slots-1 (a row's key: ids · radix)
        self.register_buffer("keys", torch.full((slots - 1,), -1, dtype=torch.int64))

    def key(self, domain_ids: torch.Tensor) -> torch.Tensor:
        return (domain_ids.to(torch.int64) * self.radix).sum(dim=1)

    @torch.no_grad()
    def assign(self, domain_ids: torch.Tensor) -> None:
        """Give the domains ``domain_ids`` (slots − 1, k) rows 1.. (in the order of their keys)."""
        keys = torch.unique(self.key(torch.as_tensor(domain_ids).reshape(-1, self.radix.numel())))
        if keys.numel() != self.slots - 1:
            raise ValueError(f"the model has {self.slots - 1} per-domain rows but {keys.numel()} distinct domains were given")
        self.keys.copy_(keys)

    def forward(self, domain_ids: torch.Tensor) -> torch.Tensor:
        """(B,) rows: the domain's own, or 0."""
        if self.slots == 1:
            return torch.zeros(domain_ids.shape[0], dtype=torch.int64, device=domain_ids.device)
        key = self.key(domain_ids)
        pos = torch.searchsorted(self.keys, key).clamp_(max=self.slots - 2)
        return torch.where(self.keys[pos] == key, pos + 1, torch.zeros_like(pos))
