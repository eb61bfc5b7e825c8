"""A comparison's runs by model family: seeds averaged, and each domain's test AUC per family.

``adasparse compare`` names its runs ``MODEL-BACKBONE-seedN`` (``adasparse-dnn-seed3``); a run's
family is its name without the seed. For the paper's question — does AdaSparse's gain sit in the
long-tail domains (Fig. 3 b)? — the analysis reports, per family:

* the long-tail bins' test AUC, mean and standard deviation over the family's seeds, and RelaImpr
  over the baseline family (the first run's), each seed paired with the baseline's same seed
  (the baseline's seed mean where it lacks that seed);
* each domain's test AUC (the family's seed mean, exact from the runs' merged test statistics),
  for the domains with at least ``min_rows`` test rows and both labels in every run, and per
  long-tail bin how many of those domains the family wins and loses against the baseline.
"""

from __future__ import annotations

import re
import statistics

import numpy as np

from adasparse.metrics import CTRMetrics
from pipelines.runtime.run_directory import RunFiles

SEED_SUFFIX = re.compile(r"-seed(\d+)$")


def family_of(name: str) -> str:
    """``adasparse-dnn-seed3`` → ``adasparse-dnn``; a name without a seed is its own family."""
    return SEED_SUFFIX.sub("", name)


def seed_of(name: str) -> int | None:
    m = SEED_SUFFIX.search(name)
    return int(m.group(1)) if m else None


def families(names: list[str]) -> dict[str, list[str]]:
    """{family: its runs' names}, in the order the families first appear."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(family_of(n), []).append(n)
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.stdev(vals) if len(vals) > 1 else None


def _rela_impr(auc: float | None, base: float | None) -> float | None:
    return None if auc is None or base is None or base <= 0.5 else (auc - 0.5) / (base - 0.5) - 1


def family_bins(tail: dict) -> dict:
    """The long-tail bins of :func:`pipelines.analysis.analyze.long_tail` by family."""
    names = list(tail["runs"])
    fams = families(names)
    base_fam = family_of(names[0])
    base_by_seed = {seed_of(n): tail["runs"][n]["bins"] for n in fams[base_fam]}
    base_mean = [_mean([b[i]["auc"] for b in base_by_seed.values()]) for i in range(len(tail["bins"]))]
    out = {}
    for fam, runs in fams.items():
        per_run = [tail["runs"][n]["bins"] for n in runs]
        aucs = [[b[i]["auc"] for b in per_run] for i in range(len(tail["bins"]))]
        impr = [[_rela_impr(tail["runs"][n]["bins"][i]["auc"],
                            base_by_seed[seed_of(n)][i]["auc"] if seed_of(n) in base_by_seed else base_mean[i])
                 for n in runs] for i in range(len(tail["bins"]))]
        out[fam] = {"runs": runs, "auc_mean": [_mean(a) for a in aucs], "auc_std": [_std(a) for a in aucs],
                    "rela_impr_mean": [_mean(v) for v in impr],
                    "unseen_auc_mean": _mean([tail["runs"][n]["unseen"]["auc"] for n in runs])}
    return {"baseline": base_fam, "families": out}


def _domain_aucs(run: RunFiles) -> dict[int, tuple[int, float]]:
    """{domain key: (test rows, test AUC)} of a run (AUC NaN where a domain lacks a label)."""
    stats = CTRMetrics.from_states([run.test_statistics()]).per_domain()
    return {int(k): (int(r), float(a)) for k, r, a in zip(stats.domain, stats.rows, stats.auc)}


def domain_table(runs: list[RunFiles], bins: list[np.ndarray], names_of: dict[int, str], min_rows: int) -> dict:
    """Each domain's test AUC by family and, per long-tail bin, the domains each family wins and
    loses against the baseline family (the first run's): see the module's docstring."""
    per_run = {r.name: _domain_aucs(r) for r in runs}
    fams = families([r.name for r in runs])
    base_fam = family_of(runs[0].name)
    train_rows = dict(zip(runs[0].vocab.train_keys.tolist(), runs[0].vocab.train_key_rows.tolist()))
    bin_of = {int(k): b for b, keys in enumerate(bins) for k in keys.tolist()}
    rows = []
    for key in sorted(bin_of, key=lambda k: (-train_rows[k], k)):
        figures = [per_run[n].get(key) for n in per_run]
        if any(f is None or np.isnan(f[1]) for f in figures) or figures[0][0] < min_rows:
            continue
        auc = {fam: statistics.fmean(per_run[n][key][1] for n in members) for fam, members in fams.items()}
        rows.append({"key": key, "name": names_of[key], "bin": bin_of[key] + 1, "train_rows": train_rows[key],
                     "test_rows": figures[0][0], "auc": auc})
    record = {}
    for fam in fams:
        by_bin = []
        for b in range(len(bins)):
            diffs = [r["auc"][fam] - r["auc"][base_fam] for r in rows if r["bin"] == b + 1]
            by_bin.append({"domains": len(diffs), "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
                           "mean_diff": _mean(diffs)})
        record[fam] = {"by_bin": by_bin, "wins": sum(b["wins"] for b in by_bin), "losses": sum(b["losses"] for b in by_bin)}
    return {"baseline": base_fam, "min_test_rows": min_rows, "domains": rows, "families": record}


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def families_markdown(bins: list[dict], fam_bins: dict, table: dict) -> str:
    """The two family tables (long-tail bins; domains won and lost per bin) as Markdown."""
    heads = " | ".join(f"{b['name']} ({b['domains']} domains)" for b in bins)
    out = ["# By model family (seeds averaged)", "",
           f"Test AUC per long-tail bin (BIN1: the largest train domains), mean ± std over seeds; RelaImpr over "
           f"{fam_bins['baseline']} paired by seed.", "", f"| family | seeds | {heads} | unseen |",
           "| --- | --- |" + " --- |" * (len(bins) + 1)]
    for fam, f in fam_bins["families"].items():
        cells = [f"{_fmt(m, '.4f')} ± {_fmt(s, '.4f')} ({_fmt(None if i is None else 100 * i, '+.1f')} %)"
                 for m, s, i in zip(f["auc_mean"], f["auc_std"], f["rela_impr_mean"])]
        out.append(f"| {fam} | {len(f['runs'])} | " + " | ".join(cells) + f" | {_fmt(f['unseen_auc_mean'], '.4f')} |")
    out += ["", f"Domains won / lost against {table['baseline']} (seed-mean test AUC of each domain with at least "
                f"{table['min_test_rows']} test rows and both labels), per bin; mean AUC difference in brackets.", "",
            f"| family | all | {' | '.join(b['name'] for b in bins)} |", "| --- | --- |" + " --- |" * len(bins)]
    for fam, f in table["families"].items():
        cells = [f"{b['wins']}/{b['losses']} ({_fmt(b['mean_diff'], '+.4f')})" for b in f["by_bin"]]
        out.append(f"| {fam} | {f['wins']}/{f['losses']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


__all__ = ["domain_table", "families", "families_markdown", "family_bins", "family_of", "seed_of"]
