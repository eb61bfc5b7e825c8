"""``adasparse analyze``: the paper's domain analyses (Fig. 3 a–b) on finished training runs.

    adasparse analyze runs/plain-dnn runs/adasparse-fusion --out analysis

* **(b) long tail** (``long_tail.png``, ``long_tail.json``): the first run's train domains
  ranked by train rows and cut into ``--bins`` bins of equal rows (BIN1 the head, the last bin
  the long tail); for every run, test AUC and GAUC over the rows of each bin's domains —
  exact, from the run's merged test statistics (``test_metrics.npz`` in its final checkpoint) —
  and each run's relative improvement over the first run (RelaImpr = (AUC − 0.5) / (AUC₀ − 0.5) − 1;
  none where the first run's AUC is at most 0.5).
  Test rows of domains never seen in train form their own column, ``unseen``.
* **(a) masks** (``masks_<run>.png``, ``mask_similarity_<run>.png``, ``masks.json``): for an
  AdaSparse run, the factors of one layer (``--layer``) for the ``--top`` largest train domains
  as a heatmap, and their pairwise similarity. In ``domain`` mode these are the binary masks π^l
  of the domains (Jaccard similarity of the kept-neuron sets); in ``instance`` mode, where π
  depends on the row, each domain's mean over its test rows of the per-row masks (weighted
  Jaccard, Σ min / Σ max), summed during the run's test evaluation for its 64 largest train
  domains (``test_masks.npz``).
* **by family** (``families.json``, ``families.md``): runs named ``MODEL-BACKBONE-seedN`` (the
  runs of ``adasparse compare``) grouped by family, the seeds averaged: the long-tail bins with
  their spread and paired RelaImpr, each domain's test AUC, and the domains each family wins and
  loses against the first run's family per bin (:mod:`pipelines.analysis.families`).

Reads local run directories (``OUT/NAME`` of ``adasparse train``); writes PNG plots and the JSON
behind them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from adasparse.config import ConfigError
from adasparse.host import write_text_atomic
from adasparse.metrics import CTRMetrics
from adasparse.vocabulary import DomainVocabulary
from pipelines.analysis.families import domain_table, families_markdown, family_bins
from pipelines.runtime.run_directory import RunFiles


def equal_row_bins(keys: np.ndarray, rows: np.ndarray, bins: int) -> list[np.ndarray]:
    """Domain keys ranked by rows (most first) and cut where the cumulative rows cross each
    1/bins of the total: bin 1 holds the few largest domains, the last the long tail."""
    order = np.lexsort((keys, -rows))
    cum = np.cumsum(rows[order]) / max(int(rows.sum()), 1)
    edges = [0] + [int(np.searchsorted(cum, (b + 1) / bins - 1e-12)) + 1 for b in range(bins)]
    edges[-1] = len(order)
    return [keys[order[edges[b] : max(edges[b], edges[b + 1])]] for b in range(bins)]


def subset_metrics(state: dict, keys: np.ndarray) -> CTRMetrics:
    """The merged statistics restricted to the domains ``keys``."""
    rows = np.isin(state["domain"], keys)
    ll = np.isin(state["ll_domain"], keys)
    return CTRMetrics.from_states([{
        "drop_mantissa_bits": int(state["drop_mantissa_bits"]), "domain": state["domain"][rows], "key": state["key"][rows],
        "pos": state["pos"][rows], "neg": state["neg"][rows], "ll_domain": state["ll_domain"][ll], "ll_sum": state["ll_sum"][ll],
    }])


def _figures(m: CTRMetrics) -> dict:
    try:
        r = m.compute()
    except ValueError:  # no rows in this bin
        return {"rows": 0, "auc": None, "gauc": None}
    return {"rows": r["rows"], "auc": None if math.isnan(r["auc"]) else r["auc"],
            "gauc": None if math.isnan(r["gauc"]) else r["gauc"]}


def tail_bins(runs: list[RunFiles], bins: int) -> list[np.ndarray]:
    """The first run's train domains in ``bins`` bins of equal train rows (:func:`equal_row_bins`)."""
    base = runs[0].vocab
    if base.train_key_rows is None:
        raise ConfigError(f"{runs[0].dir}/vocabulary.json: no train rows per domain (built before analyses existed)")
    return equal_row_bins(base.train_keys, base.train_key_rows, bins)


def long_tail(runs: list[RunFiles], groups: list[np.ndarray]) -> dict:
    """Every run's test AUC and GAUC over the domains of each bin of ``groups`` (:func:`tail_bins`)."""
    base = runs[0].vocab
    rows_of = dict(zip(base.train_keys.tolist(), base.train_key_rows.tolist()))
    out = {"bins": [{"name": f"BIN{b + 1}", "domains": int(len(g)), "train_rows": int(sum(rows_of[k] for k in g.tolist()))}
                    for b, g in enumerate(groups)], "runs": {}}
    for run in runs:
        if run.vocab.fingerprint() != base.fingerprint():
            raise ConfigError(f"{run.dir}: its domain ids differ from {runs[0].dir}'s (another dataset or vocabulary)")
        state = run.test_statistics()
        per_bin = [_figures(subset_metrics(state, g)) for g in groups]
        unseen = np.setdiff1d(np.unique(state["domain"]), base.train_keys)
        out["runs"][run.name] = {"bins": per_bin, "unseen": _figures(subset_metrics(state, unseen)),
                                 "kind": run.metrics["config"]["model"]["kind"]}
    first = out["runs"][runs[0].name]["bins"]
    for r in out["runs"].values():
        r["rela_impr"] = [None if a["auc"] is None or b["auc"] is None or b["auc"] <= 0.5 else (a["auc"] - 0.5) / (b["auc"] - 0.5) - 1
                          for a, b in zip(r["bins"], first)]
    return out


def plot_long_tail(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["runs"])
    labels = [b["name"] for b in result["bins"]]
    x = np.arange(len(labels))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        aucs = [np.nan if b["auc"] is None else b["auc"] for b in result["runs"][name]["bins"]]
        ax.bar(x + i * width - 0.4 + width / 2, aucs, width, label=name)
        if i:
            imp = [np.nan if v is None else 100 * v for v in result["runs"][name]["rela_impr"]]
            ax2.plot(x, imp, marker="o", label=name)
    ax.set_xticks(x, labels)
    ax.set_ylabel("test AUC of the bin's rows")
    lo = min((b["auc"] for r in result["runs"].values() for b in r["bins"] if b["auc"] is not None), default=0.5)
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_title("Top (BIN1) to long-tail domains (cf. paper Fig. 3(b))")
    ax.legend(fontsize=8)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_xticks(x, labels)
    ax2.set_ylabel(f"RelaImpr over {names[0]} (%)")
    if len(names) > 1:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def weighted_jaccard(m: np.ndarray) -> np.ndarray:
    """Pairwise Σ min / Σ max of the rows of ``m`` (values in [0, 1]): the Jaccard similarity of
    the kept-neuron sets for 0/1 masks, and its weighted form for mean masks."""
    inter = np.minimum(m[:, None, :], m[None, :, :]).sum(-1)
    union = np.maximum(m[:, None, :], m[None, :, :]).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


def _domain_name(vocab: DomainVocabulary, ids: list[int]) -> str:
    return " | ".join(f.values[i - 1] if i else "<oov>" for f, i in zip(vocab.fields, ids))


def domain_masks(run: RunFiles, layer: int, top: int) -> dict:
    """The factors of ``layer`` for the run's ``top`` largest train domains: in ``domain`` mode the
    binary masks of the model itself; in ``instance`` mode each domain's mean over its test rows
    of the per-row masks (``test_masks.npz`` of the final checkpoint, summed during the test
    evaluation: no extra pass over the data)."""
    import torch

    from adasparse.model import build_model

    cfg = run.model_config()
    if cfg.kind != "adasparse":
        return {"skipped": f"a {cfg.kind} model has no pruner"}
    vocab = run.vocab
    widths = build_model(cfg).pruned_widths
    if not 0 <= layer < len(widths):
        raise ConfigError(f"--layer {layer}: the run prunes {len(widths)} layers (0..{len(widths) - 1})")
    if cfg.pruner.input == "domain":
        model = run.load_model()
        order = np.lexsort((vocab.train_keys, -vocab.train_key_rows))[:top]
        m = model.domain_masks(torch.from_numpy(vocab.train_ids[order]))[layer].numpy().astype(float)
        ids, rows, source = vocab.train_ids[order], vocab.train_key_rows[order], "the domain's mask (domain mode)"
    else:
        path = run.checkpoint / "test_masks.npz"
        if not path.is_file():
            return {"skipped": f"{path}: missing (instance-mode masks are summed during the test evaluation of runs "
                               "since 2026-11-30; rerun the training)"}
        with np.load(path) as z:
            keys, test_rows, kept = z["keys"], z["rows"], z["kept"]
        position = {int(k): i for i, k in enumerate(vocab.train_keys.tolist())}
        tracked = [(int(vocab.train_key_rows[position[int(k)]]), int(k), j) for j, k in enumerate(keys.tolist())
                   if test_rows[j] > 0 and int(k) in position]
        tracked = sorted(tracked, key=lambda t: (-t[0], t[1]))[:top]
        if len(tracked) < 2:
            return {"skipped": "fewer than two of the largest train domains have test rows"}
        sel = np.array([j for _, _, j in tracked])
        start = sum(widths[:layer])
        m = kept[sel, start : start + widths[layer]] / test_rows[sel, None]
        ids = vocab.train_ids[[position[k] for _, k, _ in tracked]]
        rows, source = np.array([r for r, _, _ in tracked]), "mean over each domain's test rows of the per-row masks (instance mode)"
    return {"layer": layer, "width": int(m.shape[1]), "mode": cfg.pruner.input, "source": source,
            "domains": [_domain_name(vocab, row) for row in ids.tolist()], "train_rows": rows.tolist(),
            "kept": m.tolist(), "sparsity": (1 - m.mean(1)).tolist(), "jaccard": weighted_jaccard(m).tolist()}


def plot_masks(name: str, result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = np.array(result["kept"])
    fig, ax = plt.subplots(figsize=(max(7.0, min(14.0, 2 + kept.shape[1] / 10)), 1.5 + 0.3 * len(kept)))
    im = ax.imshow(kept, aspect="auto", cmap="Greys_r", interpolation="nearest", vmin=0, vmax=1)
    ax.set_yticks(range(len(kept)), result["domains"], fontsize=7)
    if result["mode"] == "domain":
        ax.set_xlabel(f"neuron of pruned layer {result['layer']} (white: kept, black: pruned)")
        ax.set_title(f"{name}: binary factors of the largest domains\n(cf. paper Fig. 3(a))", fontsize=10)
    else:
        ax.set_xlabel(f"neuron of pruned layer {result['layer']} (share of the domain's test rows that keep it)")
        ax.set_title(f"{name}: mean per-row masks of the largest domains\n(cf. paper Fig. 3(a))", fontsize=10)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / f"masks_{name}.png", dpi=120)
    plt.close(fig)
    jac = np.array(result["jaccard"])
    fig, ax = plt.subplots(figsize=(max(5.0, 2.5 + 0.35 * len(jac)), max(4.0, 1 + 0.35 * len(jac))))
    im = ax.imshow(jac, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(jac)), range(1, len(jac) + 1), fontsize=7)
    ax.set_yticks(range(len(jac)), result["domains"], fontsize=7)
    ax.set_title("Jaccard similarity of kept neurons" if result["mode"] == "domain" else "weighted Jaccard similarity of mean masks")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / f"mask_similarity_{name}.png", dpi=120)
    plt.close(fig)


def analyze(run_dirs: list[str], out: str, bins: int = 5, layer: int = 0, top: int = 20, min_test_rows: int = 50,
            log=print) -> dict:
    if bins < 2:
        raise ConfigError("--bins must be at least 2")
    if min_test_rows < 1:
        raise ConfigError("--min-test-rows must be at least 1")
    if top < 2:
        raise ConfigError("--top must be at least 2")
    runs = [RunFiles(p) for p in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two runs are named alike ({', '.join(names)}): analyse runs of distinct names")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = tail_bins(runs, bins)
    tail = long_tail(runs, groups)
    write_text_atomic(out_dir / "long_tail.json", json.dumps(tail, indent=2))
    plot_long_tail(tail, out_dir / "long_tail.png")
    by_family, family_md = _by_family(runs, tail, groups, min_test_rows, out_dir)
    masks = {}
    for run in runs:
        masks[run.name] = domain_masks(run, layer, top)
        if "kept" in masks[run.name]:
            plot_masks(run.name, masks[run.name], out_dir)
    write_text_atomic(out_dir / "masks.json", json.dumps(masks, indent=2))
    log(f"{'bin':<6} {'domains':>8} {'train rows':>11}  " + "  ".join(f"{n[:18]:>18}" for n in names))
    for b, info in enumerate(tail["bins"]):
        cells = []
        for n in names:
            r = tail["runs"][n]
            auc, imp = r["bins"][b]["auc"], r["rela_impr"][b]
            cells.append(f"{'-' if auc is None else f'{auc:.4f}':>8} {'' if imp is None or n == names[0] else f'{100 * imp:+.1f}%':>9}")
        log(f"{info['name']:<6} {info['domains']:>8,} {info['train_rows']:>11,}  " + "  ".join(f"{c:>18}" for c in cells))
    for n, m in masks.items():
        if "skipped" in m:
            log(f"masks of {n}: skipped: {m['skipped']}")
    if any(len(f["runs"]) > 1 for f in by_family["bins"]["families"].values()):
        log(family_md)
    log(f"plots and JSON written to {out_dir}")
    return {"long_tail": tail, "masks": masks, "families": by_family}


def _by_family(runs: list[RunFiles], tail: dict, groups: list[np.ndarray], min_test_rows: int,
               out_dir: Path) -> tuple[dict, str]:
    """``families.json`` and ``families.md`` (:mod:`pipelines.analysis.families`): the result and the Markdown."""
    vocab = runs[0].vocab
    names_of = {int(k): _domain_name(vocab, ids) for k, ids in zip(vocab.train_keys.tolist(), vocab.train_ids.tolist())}
    result = {"bins": family_bins(tail), "domains": domain_table(runs, groups, names_of, min_test_rows)}
    md = families_markdown(tail["bins"], result["bins"], result["domains"])
    write_text_atomic(out_dir / "families.json", json.dumps(result, indent=2))
    write_text_atomic(out_dir / "families.md", md)
    return result, md


__all__ = ["analyze", "equal_row_bins", "long_tail", "subset_metrics", "tail_bins"]
