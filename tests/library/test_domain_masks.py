"""DomainMasks (Fig. 3(a)'s per-domain mean masks): its grouped sums against row-by-row ones."""

from __future__ import annotations

import numpy as np

from adasparse.loop import DomainMasks


def test_masks_sum_each_tracked_domains_rows_and_ignore_the_others():
    rng = np.random.default_rng(3)
    tracked = np.array([40, 7, 13, 99])  # unsorted on purpose: tracking sorts them
    masks = DomainMasks.tracking(tracked, 10)
    want_kept, want_rows = np.zeros((4, 10)), np.zeros(4, dtype=np.int64)
    keys = np.sort(tracked)
    for _ in range(5):
        domains = rng.choice([7, 13, 40, 99, 5, 120, 0], size=257)  # 5, 120, 0: not tracked
        gates = (rng.random((257, 10)) < 0.4).astype(np.float32)
        masks.add(domains, gates)
        for d, g in zip(domains, gates):  # the reference: one row at a time
            if d in keys:
                k = int(np.searchsorted(keys, d))
                want_kept[k] += g
                want_rows[k] += 1
    assert masks.keys.tolist() == [7, 13, 40, 99]
    assert np.array_equal(masks.rows, want_rows) and np.array_equal(masks.kept, want_kept)
    assert np.allclose(masks.mean, want_kept / want_rows[:, None])
    masks.add(np.array([5, 120]), np.ones((2, 10), dtype=np.float32))  # no tracked row: nothing changes
    assert np.array_equal(masks.rows, want_rows)
