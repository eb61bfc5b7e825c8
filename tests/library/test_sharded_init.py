"""The sharded tables' initialisation: any block of rows and columns is the same slice of the whole
table (so a worker draws only its shard, whatever the sharding), N(0, σ)."""

import torch

from adasparse.distributed.sharded_tables import INIT_CHUNK_ROWS, init_block


def test_a_shard_draws_the_same_values_as_the_whole_table():
    rows = 2 * INIT_CHUNK_ROWS + 123
    whole = init_block(5, "item", (0, rows), (0, 8), 8, 0.2)
    for r0, r1, c0, c1 in [(0, 10, 0, 8), (INIT_CHUNK_ROWS - 3, INIT_CHUNK_ROWS + 4, 2, 6), (rows - 50, rows, 4, 8)]:
        assert torch.equal(init_block(5, "item", (r0, r1), (c0, c1), 8, 0.2), whole[r0:r1, c0:c1])
    assert abs(float(whole.std()) - 0.2) < 0.002 and abs(float(whole.mean())) < 0.002
    assert not torch.equal(init_block(6, "item", (0, 10), (0, 8), 8, 0.2), whole[:10])  # the seed matters
    assert not torch.equal(init_block(5, "user", (0, 10), (0, 8), 8, 0.2), whole[:10])  # and the table
