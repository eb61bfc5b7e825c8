"""Domain summary of a dataset: rows and CTR per domain, number of domains, long-tail shape.

One streaming pass over the domain-aware fields and the label (per-batch ``np.unique``
counts, merged at the driver), so it works on billions of rows with memory bounded by the
number of domains.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.data.reading import read_raw
from pipelines.data.sources import DataSource
from pipelines.data.encoding import categorical_hashes
from adasparse.encoding import domain_id_from_hashes


class _DomainCounts:
    def __init__(self, source: DataSource):
        self.spec = source.spec

    def __call__(self, t: pa.Table) -> dict[str, np.ndarray]:
        s = self.spec
        dom = domain_id_from_hashes([categorical_hashes(t[f.name], f.name, s.missing_values) for f in s.domain_fields])
        uniq, inv = np.unique(dom, return_inverse=True)
        y = t[s.label].to_numpy(zero_copy_only=False).astype(np.float64)
        rows = np.bincount(inv, minlength=len(uniq))
        clicks = np.bincount(inv, weights=y, minlength=len(uniq))
        # one example of the raw domain values per domain, for the report
        first = np.zeros(len(uniq), dtype=np.int64)
        first[inv[::-1]] = np.arange(len(dom))[::-1]
        label = [
            "|".join(str(t[f.name][int(i)]) for f in s.domain_fields) for i in first
        ]
        return {"domain": uniq, "rows": rows, "clicks": clicks, "label": np.array(label, dtype=object)}


def domain_summary(source: DataSource, top: int = 10) -> dict:
    s = source.spec
    cols = [f.name for f in s.domain_fields] + [s.label]
    ds = read_raw(source, cols, with_paths=False).map_batches(_DomainCounts(source), batch_format="pyarrow")
    rows: dict[int, list] = {}
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        for d, r, c, lab in zip(b["domain"], b["rows"], b["clicks"], b["label"]):
            acc = rows.setdefault(int(d), [0, 0.0, lab])
            acc[0] += int(r)
            acc[1] += float(c)
    n = np.array([v[0] for v in rows.values()])
    c = np.array([v[1] for v in rows.values()])
    names = [v[2] for v in rows.values()]
    order = np.argsort(-n, kind="stable")
    total = int(n.sum())
    cum = np.cumsum(n[order]) / max(total, 1)
    k = len(n)

    def share(frac: float) -> float:
        return float(cum[max(0, int(np.ceil(frac * k)) - 1)]) if k else 0.0

    return {
        "rows": total,
        "clicks": int(c.sum()),
        "ctr": float(c.sum() / max(total, 1)),
        "domains": k,
        "rows_in_top_1pct_domains": share(0.01),
        "rows_in_top_10pct_domains": share(0.10),
        "domains_under_100_rows": int((n < 100).sum()),
        "median_rows_per_domain": float(np.median(n)) if k else 0.0,
        "top_domains": [
            {"domain": names[i], "rows": int(n[i]), "ctr": float(c[i] / n[i])} for i in order[:top]
        ],
    }
