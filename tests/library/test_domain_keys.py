"""The domain key's mixed radix is derived once (adasparse/portable/domain_keys.py) with one
limit, 2^63, and the vocabulary, the model's domain layers and the exported runtime use it."""

import numpy as np
import torch

from adasparse.layers.domain_index import DomainIndex, distinct_domains, mixed_radix
from adasparse.portable.domain_keys import KEY_LIMIT, domain_keys, key_radix


def test_the_radix_is_the_mixed_radix_of_the_sizes_and_keys_are_exact():
    assert key_radix([3, 5, 7]).tolist() == [1, 3, 15]
    ids = np.array([[2, 4, 6], [0, 0, 0], [1, 2, 3]])
    assert domain_keys(ids, key_radix([3, 5, 7])).tolist() == [2 + 4 * 3 + 6 * 15, 0, 1 + 2 * 3 + 3 * 15]


def test_one_limit_two_to_the_63_computed_exactly():
    assert KEY_LIMIT == 2**63
    below = [2**32, 2**31 - 1]  # product 2^63 - 2^32: every key fits
    assert key_radix(below).tolist() == [1, 2**32]
    assert key_radix([2**32, 2**31]) is None  # product exactly 2^63: refused (the limit is strict)
    assert key_radix([3037000499, 3037000499]) is not None  # ⌊√(2^63)⌋², just below: float rounding would misjudge it
    assert key_radix([3037000500, 3037000500]) is None
    big = [300_001] * 8  # (300k + 1)^8 > 2^63: keys fall back to a hash of the tuple
    assert key_radix(big) is None
    keys = domain_keys(np.array([[1] * 8, [2] * 8, [1] * 8]), None)
    assert keys[0] == keys[2] != keys[1]


def test_the_model_layers_take_the_same_radix_and_the_same_limit():
    sizes = [6, 11, 4]
    assert mixed_radix(sizes).tolist() == key_radix(sizes).tolist()
    assert mixed_radix([2**32, 2**31]) is None and mixed_radix([2**32, 2**31 - 1]) is not None
    ids = torch.tensor([[1, 2, 3], [5, 10, 3], [1, 2, 3]])
    inverse, _, counts = distinct_domains(ids, mixed_radix(sizes))
    assert inverse[0] == inverse[2] != inverse[1] and counts.tolist() == [2, 1]
    index = DomainIndex(sizes, slots=3)
    assert index.key(ids).tolist() == domain_keys(ids.numpy(), key_radix(sizes)).tolist()


def test_no_other_module_derives_a_radix():
    """The derivation (a cumulative product of field sizes) appears in domain_keys.py only."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = [str(p.relative_to(root)) for pkg in ("adasparse", "pipelines") for p in (root / pkg).rglob("*.py")
             if "cumprod" in p.read_text() or "mult *=" in p.read_text()]
    assert found == ["adasparse/portable/domain_keys.py"]
