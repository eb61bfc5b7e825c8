"""The CTR model: feature embeddings → backbone (DNN or DCNv2) → logit, with a domain arch
acting on the backbone's deep tower.

Composed from small named arches (``embedding``, ``backbone`` and one domain arch). ``kind``
picks the domain arch: ``plain`` none (the baseline), ``adasparse`` the domain-adaptive pruner
between the layers (``pruner``), and the paper's competitors (docs/competitors.md): ``star``
(star-topology FC, partitioned normalisation, auxiliary net: ``star``), ``apg`` (weights
generated from e_d: the deep tower's own layers), ``pepnet`` (EPNet and PPNet gates:
``pepnet``) and ``maml`` (the head adapted per domain by inner steps: ``maml``). The training
objective is :meth:`CTRModel.objective`: cross-entropy (eq. 1) + R_s (eq. 9) for AdaSparse,
the query loss after the inner steps for MAML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adasparse.config import ModelConfig
from adasparse.layers.apg import ApgContext, ApgLinear
from adasparse.layers.dcnv2 import DCNv2Backbone
from adasparse.layers.dnn import DNNBackbone
from adasparse.layers.domain_index import mixed_radix
from adasparse.layers.embedding import FeatureEmbeddingArch, ShardedFeatureEmbeddingArch
from adasparse.layers import maml as maml_layers
from adasparse.layers.maml import MamlArch, MamlContext, adapt, head_logits, head_params
from adasparse.layers.pepnet import PepNetArch
from adasparse.layers.pruner import DomainAdaptivePruner, PruneContext
from adasparse.layers.star import StarArch
from adasparse.regularizer import sparsity_regularization
from adasparse.schedules import alpha_at, lambda_hat_at
from adasparse.vocabulary import DomainVocabulary, domain_min_rows, with_domain_rows


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B,)
    ratios: torch.Tensor | None = None  # (L,) r^l per pruned layer, differentiable; None without pruner
    prune: PruneContext | None = None
    samples: int = 0  # the schedules' position: training samples (of all workers) before this forward
    maml: MamlContext | None = None  # MAML's captured head inputs (its meta-loss needs the labels)


@dataclass
class Objective:
    total: torch.Tensor
    ctr: torch.Tensor
    sparsity: torch.Tensor


class CTRModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        feats = cfg.features
        arch = FeatureEmbeddingArch if cfg.embedding.sharding == "replicated" else ShardedFeatureEmbeddingArch
        self.embedding = arch(feats, cfg.embedding)
        in_dim = self.embedding.output_dim
        domain_dim = self.embedding.domain_dim
        domain_buckets = [f.buckets for f in feats.domain_fields]
        make_layer = nn.Linear
        if cfg.kind == "apg":  # the deep tower's layers generate their weights from e_d
            def make_layer(n_in: int, n_out: int) -> nn.Module:
                return ApgLinear(n_in, n_out, domain_dim, cfg.apg)
        if cfg.backbone == "dnn":
            self.backbone = DNNBackbone(in_dim, cfg.hidden_units, make_layer)
        else:
            self.backbone = DCNv2Backbone(in_dim, cfg.hidden_units, cfg.cross_layers, make_layer)
        self.prunes_input = cfg.kind == "adasparse" and cfg.pruner.prune_input
        self.pruner = self.star = self.pepnet = self.maml = None
        if cfg.kind == "adasparse":
            widths = ([in_dim] if self.prunes_input else []) + self.backbone.widths
            self.pruner = DomainAdaptivePruner(domain_dim, widths, domain_buckets, cfg.pruner)
        elif cfg.kind == "star":
            self.star = StarArch(in_dim, domain_dim, self.backbone.linear_shapes, domain_buckets, cfg.domain_slots, cfg.star)
        elif cfg.kind == "pepnet":
            names = [f.name for f in feats.all_categorical]
            persona = [names.index(n) for n in cfg.pepnet.persona_fields]
            fields = len(names) + len(feats.numeric_fields)
            self.pepnet = PepNetArch(fields, cfg.embedding.dim, domain_dim, persona, [in_dim] + self.backbone.widths, cfg.pepnet)
        elif cfg.kind == "maml":
            self.maml = MamlArch(len(feats.all_categorical), len(feats.numeric_fields), domain_buckets, cfg.domain_slots, cfg.maml)
        self._adapted: tuple[int, torch.Tensor, list[torch.Tensor]] | None = None  # MAML's heads at evaluation
        self.register_buffer("domain_radix", mixed_radix(domain_buckets), persistent=False)
        # Training updates and training samples (of all data-parallel workers): the samples
        # drive α and λ̂ (adasparse.schedules); both are saved with the model. Python mirrors
        # avoid a device sync per step; they are refreshed on load_state_dict.
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("num_samples", torch.zeros((), dtype=torch.int64))
        self._updates = self._samples = 0
        self.register_load_state_dict_post_hook(lambda module, keys: module._sync_updates())
        self.check_ids = True
        # forward without data-dependent shapes (``torch.export``): see :meth:`for_export`
        self.static_shapes = False
        # rows of the whole run that one local row stands for (the data-parallel world size)
        self.sample_scale = 1
        # False: the training loop advances the clock by each step's rows of all workers
        # (:meth:`advance`), for data-parallel steps whose batches differ in size between workers
        self.clock_in_forward = True
        self.planned_samples: int | None = None  # the run's training samples (rows × epochs), if known

    def _sync_updates(self) -> None:
        self._updates = int(self.num_updates)
        self._samples = int(self.num_samples)
        self._adapted = None

    # -- schedules -----------------------------------------------------------------------
    def plan_schedule(self, planned_samples: int, sample_scale: int = 1) -> None:
        """Tell the model its run: ``planned_samples`` training samples in all (α's anneal is a
        fraction of them), each local row standing for ``sample_scale`` (the number of workers)."""
        self.planned_samples = int(planned_samples) if planned_samples else None
        self.sample_scale = max(1, int(sample_scale))

    @property
    def alpha(self) -> float:
        return alpha_at(self._samples, self.cfg.pruner, self.planned_samples)

    @property
    def lambda_hat(self) -> float:
        return lambda_hat_at(self._samples, self.cfg.pruner)

    @property
    def samples_seen(self) -> int:
        """Training samples (of all workers) so far: the schedules' clock."""
        return self._samples

    @property
    def pruned_widths(self) -> list[int]:
        return [] if self.pruner is None else list(self.pruner.widths)

    # -- forward ---------------------------------------------------------------------------
    def _check(self, cat_ids: torch.Tensor) -> None:
        buckets = self.embedding.buckets
        if cat_ids.dim() != 2 or cat_ids.shape[1] != buckets.shape[0]:
            raise ValueError(f"cat_ids must be (batch, {buckets.shape[0]}), got {tuple(cat_ids.shape)}")
        bad = (cat_ids < 0) | (cat_ids >= buckets)
        if bool(bad.any()):
            col = int(bad.any(dim=0).nonzero()[0])
            name = self.cfg.features.all_categorical[col].name
            raise ValueError(f"field {name!r}: bucket id outside [0, {int(buckets[col])})")

    def forward(self, cat_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> ModelOutput:
        """Logits for a batch; a training-mode forward counts one update of the α/λ̂ schedules."""
        if self.check_ids:
            self._check(cat_ids)
        x = self.embedding(cat_ids, numeric)
        seen = self._samples
        k = self.embedding.num_domain_fields
        domain_ids, e_d = cat_ids[:, :k], x[:, : self.embedding.domain_dim]
        if self.star is not None:
            star = self.star.begin(e_d, domain_ids, per_row=self.static_shapes)
            out = ModelOutput(star.output(self.backbone(star.input(x), linear=star.linear)), samples=seen)
        elif self.cfg.kind == "apg":
            apg = ApgContext(self.backbone.deep.layers, e_d, domain_ids, self.domain_radix)
            out = ModelOutput(self.backbone(x, linear=apg.linear), samples=seen)
        elif self.maml is not None:
            maml = MamlContext(self.maml, self.backbone, domain_ids, self.domain_radix)
            logits = self.backbone(x, linear=maml.linear)
            if self.training:
                maml.cat_ids, maml.numeric = cat_ids, numeric
            elif self.static_shapes:
                logits = self._served_maml_logits(maml, domain_ids)
            else:
                logits = self._adapted_logits(logits, maml, domain_ids)
            out = ModelOutput(logits, samples=seen, maml=maml)
        elif self.pepnet is not None:
            rows = x.view(x.shape[0], -1, self.embedding.dim)
            persona = rows[:, self.pepnet.persona].flatten(1) if self.pepnet.persona else None
            gates = self.pepnet.begin(x, e_d, persona)
            out = ModelOutput(self.backbone(gates.input(), gates, 1), samples=seen)
        elif self.pruner is None:
            out = ModelOutput(self.backbone(x), samples=seen)
        else:
            p = self.cfg.pruner
            per_domain = self.training and p.regularized and p.sparsity_scope == "domain"
            ctx = self.pruner.begin(e_d, domain_ids, self.alpha, per_domain, dedup=not self.static_shapes)
            first = 0
            if self.prunes_input:
                x = ctx(0, x)
                first = 1
            out = ModelOutput(self.backbone(x, ctx, first), ctx.ratios, ctx, seen)
        if self.training and self.clock_in_forward:
            self.advance(cat_ids.shape[0] * self.sample_scale)
        return out

    def advance(self, samples: int) -> None:
        """The schedules' clock after one training update on ``samples`` rows (of all workers)."""
        self._updates += 1
        self._samples += int(samples)
        self.num_updates.fill_(self._updates)
        self.num_samples.fill_(self._samples)

    def objective(self, out: ModelOutput, labels: torch.Tensor) -> Objective:
        """L_CTR (eq. 1, mean binary cross-entropy) + R_s (eq. 9) when the pruner is regularized:
        over the batch's r^l, or per domain (``pruner.sparsity_scope``)."""
        if out.maml is not None and out.maml.cat_ids is not None:  # MAML in training: the query loss
            ctr = out.maml.meta_loss(labels)
            self.maml.remember(out.maml.cat_ids, out.maml.numeric, labels, self.maml.index(out.maml.domain_ids))
        else:
            ctr = F.binary_cross_entropy_with_logits(out.logits.float(), labels.float())
        if self.pruner is not None and self.cfg.pruner.regularized and out.ratios is not None:
            p = self.cfg.pruner
            lam = lambda_hat_at(out.samples, p)
            if out.prune is not None and out.prune.per_domain:
                ratios, weights = out.prune.domain_ratios
                reg = sparsity_regularization(ratios, p.r_min, p.r_max, lam, weights)
            else:
                reg = sparsity_regularization(out.ratios, p.r_min, p.r_max, lam)
        else:
            reg = torch.zeros((), device=ctr.device)
        return Objective(ctr + reg, ctr, reg)

    def _adapted_logits(self, logits: torch.Tensor, ctx: MamlContext, domain_ids: torch.Tensor) -> torch.Tensor:
        """MAML at evaluation: rows of a domain with support rows get the logit of the head
        adapted on them; the others keep the meta-learned head's."""
        slots, heads = self.adapted_heads()
        if not slots.numel():
            return logits
        row_slot = self.maml.index(domain_ids)
        group = torch.full((self.maml.index.slots,), -1, dtype=torch.int64, device=logits.device)
        group[slots] = torch.arange(slots.numel(), device=logits.device)
        g = group.index_select(0, row_slot)
        has = (g >= 0).nonzero().squeeze(1)
        if not has.numel():
            return logits
        c = None if ctx.c is None else ctx.c.index_select(0, has)
        adapted = head_logits(ctx.z.index_select(0, has), c, heads, g.index_select(0, has)).to(logits.dtype)
        return logits.index_copy(0, has, adapted)

    def _served_maml_logits(self, ctx: MamlContext, domain_ids: torch.Tensor) -> torch.Tensor:
        """MAML at evaluation without data-dependent shapes: every row through the head of its
        group (:meth:`for_export` stacked the adapted heads and the meta head last)."""
        group = self.served_head_group.index_select(0, self.maml.index(domain_ids))
        heads = [getattr(self, f"served_head_{j}") for j in range(4)]
        return head_logits(ctx.z, ctx.c, heads, group)

    @torch.no_grad()
    def for_export(self) -> "CTRModel":
        """Switch to an evaluation forward that ``torch.export`` traces with a dynamic batch:
        no id check, domain-mode factors row by row, STAR's weights gathered per row, and MAML's
        adapted heads computed now and kept as buffers (the meta-learned head serves domains
        without support rows). The logits are those of the evaluation forward (to float
        rounding). Returns the model, in eval mode."""
        self.eval()
        self.check_ids = False
        self.static_shapes = True
        if self.maml is not None:
            slots, heads = self.adapted_heads()
            meta = head_params(self.backbone)
            group = torch.full((self.maml.index.slots,), slots.numel(), dtype=torch.int64, device=self.embedding.offsets.device)
            group[slots] = torch.arange(slots.numel(), device=group.device)
            self.register_buffer("served_head_group", group, persistent=False)
            for j, m in enumerate(meta):
                stacked = torch.cat([heads[j], m.detach().unsqueeze(0)]) if heads else m.detach().unsqueeze(0)
                self.register_buffer(f"served_head_{j}", stacked, persistent=False)
        return self

    def adapted_heads(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """MAML: every support-holding slot's head, adapted on its buffered train rows with the
        current weights; cached until the next update or load."""
        if self._adapted is not None and self._adapted[0] == self._updates:
            return self._adapted[1], self._adapted[2]
        slots, cat, num, labels, group = self.maml.support()
        cfg = self.maml.cfg
        parts: list[list[torch.Tensor]] = []
        # domains in chunks: the inner step computes every support row with its own copy of the
        # head (rows × head parameters), so a chunk holds about ADAPT_CHUNK_VALUES of them at most
        head_size = sum(p.numel() for p in head_params(self.backbone))
        per_chunk = max(1, maml_layers.ADAPT_CHUNK_VALUES // max(1, cfg.support_rows * head_size))
        for lo in range(0, slots.numel(), per_chunk):
            rows = ((group >= lo) & (group < lo + per_chunk)).nonzero().squeeze(1)
            c_cat, c_num = cat.index_select(0, rows), num.index_select(0, rows)
            ctx = MamlContext(self.maml, self.backbone, c_cat[:, : self.embedding.num_domain_fields], self.domain_radix)
            with torch.no_grad():
                self.backbone(self.embedding(c_cat, c_num if c_num.shape[1] else None), linear=ctx.linear)
            n = min(per_chunk, slots.numel() - lo)
            parts.append([h.detach() for h in adapt(head_params(self.backbone), ctx.z, ctx.c, labels.index_select(0, rows),
                                                     group.index_select(0, rows) - lo, n, cfg.inner_steps, cfg.inner_lr,
                                                     True)])
        heads = [torch.cat(p) for p in zip(*parts)] if parts else []
        self._adapted = (self._updates, slots, heads)
        return slots, heads

    def table_rows_per_step(self, batch: int) -> dict[nn.Parameter, int]:
        """Each sparse table's bound on the rows a step of ``batch`` rows touches (for the
        gradient exchange): a lookup per categorical field per row, STAR's one row per row."""
        bounds = {self.embedding.table.weight: batch * self.embedding.table_fields}
        if self.star is not None:
            bounds[self.star.table.weight] = batch
        return bounds

    @torch.no_grad()
    def start_at_base_rate(self, rate: float) -> None:
        """Set the logit layer's bias to log(p / (1 − p)) of the click rate ``rate`` (clipped to
        [1e-6, 1 − 1e-6]), so the untrained model predicts the base rate: the first steps then
        learn which rows differ from it instead of pushing every layer towards the base rate,
        which saturates the tanh tower of a model with factorised weights (APG)."""
        p = min(max(float(rate), 1e-6), 1.0 - 1e-6)
        self.backbone.logit.bias.fill_(math.log(p / (1.0 - p)))

    # -- inspection ------------------------------------------------------------------------
    @torch.no_grad()
    def masks(self, cat_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per pruned layer, the boolean kept-mask of every row of a batch (B, N_l)."""
        if self.pruner is None:
            return []
        was = self.training
        self.eval()
        try:
            out = self(cat_ids, numeric)
        finally:
            self.train(was)
        return out.prune.row_gates()

    @torch.no_grad()
    def domain_masks(self, domain_ids: torch.Tensor) -> list[torch.Tensor]:
        """Domain mode: per pruned layer, the boolean kept-mask of each domain (D, N_l).

        ``domain_ids`` (D, k) holds the bucket ids of the k domain-aware fields of each domain.
        """
        if self.pruner is None:
            return []
        k = self.embedding.num_domain_fields
        e_d = self.embedding.table(domain_ids[:, :k] + self.embedding.offsets[:k]).flatten(1)
        return [pi > 0 for pi in self.pruner.domain_factors(e_d, self.alpha)]


def build_model(cfg: ModelConfig, vocabulary: DomainVocabulary | None = None) -> CTRModel:
    """A new model. A STAR model's per-domain rows go to the ``vocabulary``'s train domains
    (``domain_slots`` set from it); with ``logit_bias_init: base_rate`` the logit starts at the
    vocabulary's train click rate. Without a vocabulary it is a shell for ``load_state_dict``,
    with the rows its config names."""
    if vocabulary is None:
        return CTRModel(cfg)
    cfg = with_domain_rows(cfg, vocabulary)
    model = CTRModel(cfg)
    per_domain = model.star or model.maml
    if per_domain is not None:
        per_domain.index.assign(torch.from_numpy(vocabulary.domains_with_rows(domain_min_rows(cfg))))
    if cfg.logit_bias_init == "base_rate" and vocabulary.base_rate is not None:
        model.start_at_base_rate(vocabulary.base_rate)
    return model


def collective_lookups(model: nn.Module) -> bool:
    """Whether a lookup needs every worker (sharded tables): a worker without rows still takes part."""
    return isinstance(getattr(model, "embedding", None), ShardedFeatureEmbeddingArch)


def layer_sparsity(masks: list[torch.Tensor]) -> list[float]:
    """Fraction of pruned neurons per layer, r^l = 1 − ||π^l||_0 / N_l, over the mask rows."""
    return [1.0 - m.float().mean().item() for m in masks]
