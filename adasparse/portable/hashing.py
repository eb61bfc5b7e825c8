"""Stable, vectorised hashing of raw categorical values into per-field buckets.

No vocabulary pass is ever made: a value's bucket is a pure function of (field name, value),
the same on every run, process and machine (no use of Python's salted ``hash``). Integers are
mixed with the SplitMix64 finaliser; strings go through BLAKE2b once per distinct value.
An id never seen in training still lands in a bucket whose embedding was trained on other
rare values of that field, which is the sane fallback for billions of rows.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

MISSING_SENTINEL = "\x00missing"  # the value every missing entry of a field hashes as


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic), a bijection with good avalanche."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN  # a fresh array: the steps below work in place
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def field_salt(name: str) -> np.uint64:
    """A 64-bit salt derived from the field name, so equal values of two fields differ."""
    return np.uint64(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little"))


def _strings_to_u64(values: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    codes = np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in uniq),
        dtype=np.uint64,
        count=len(uniq),
    )
    return codes[inverse.reshape(-1)]


def hash_values(values: np.ndarray, name: str) -> np.ndarray:
    """64-bit stable hash of raw values (integers or strings) of field ``name``."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        raw = values.astype(np.int64).view(np.uint64)
    elif values.dtype.kind in "USO":
        raw = _strings_to_u64(values)
    else:
        raise TypeError(f"field {name!r}: cannot hash values of dtype {values.dtype}")
    return splitmix64(raw ^ field_salt(name))


def hash_to_buckets(values: np.ndarray, name: str, buckets: int) -> np.ndarray:
    """Bucket index in [0, buckets) of each raw value of field ``name`` (int64 array)."""
    if buckets < 1:
        raise ValueError(f"field {name!r}: buckets must be >= 1, got {buckets}")
    return (hash_values(values, name) % np.uint64(buckets)).astype(np.int64)


def field_hashes(values: np.ndarray, name: str, missing: np.ndarray | None = None) -> np.ndarray:
    """64-bit hashes of a field's raw values; masked (missing) rows get the field's sentinel hash."""
    values = np.asarray(values)
    if missing is not None and missing.any():
        sentinel = hash_values(np.array([MISSING_SENTINEL]), name)[0]
        if values.dtype.kind in "iub":
            # numbers: hash every row (cheap, vectorised) and overwrite the masked ones
            h = hash_values(values, name)
        else:
            h = np.empty(len(values), dtype=np.uint64)
            present = ~missing
            if present.any():
                h[present] = hash_values(values[present], name)
        h[missing] = sentinel
        return h
    return hash_values(values, name)


def domain_id_from_hashes(hashes: list[np.ndarray]) -> np.ndarray:
    """Stable int64 id of the tuple of domain-aware values of each row (for metrics and reports).

    Distinct tuples collide with probability ~n²/2^64: never in practice for 10^4–10^6 domains.
    """
    acc = np.zeros(len(hashes[0]), dtype=np.uint64)
    for h in hashes:
        acc = splitmix64(acc ^ h)
    return acc.view(np.int64)
