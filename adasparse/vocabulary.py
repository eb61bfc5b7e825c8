"""Exact ids for the domain-aware fields: a vocabulary per field, built from the train split.

Domain-aware fields are never hashed into buckets (two values would share an embedding row
and the model could not tell their domains apart). Each field's values seen at least
``min_count`` times in the train split get ids 1..V, most frequent first; id 0 is the field's
out-of-vocabulary id, shared by the rarer values (so it is trained on them) and by every value
never seen in train (so an unseen domain gets a learned e_d). The field's embedding slice has
V + 1 rows.

A value is identified by its 64-bit field-salted hash (:func:`adasparse.portable.hashing.hash_values`,
the same function for strings, integers and missing values at training, evaluation and
serving time), and the vocabulary keeps one raw value beside each hash for people to read.
Two values share an id only if their 64-bit hashes collide: with n values in a field about
n²/2^65 (3·10^-8 for a million values), against certainty for hashing into ~2n buckets.

A *domain* is the tuple of its fields' ids; its key (the GAUC grouping, per-domain reports) is
that tuple in mixed radix — exact while the product of the fields' sizes fits in 63 bits, else
a 64-bit hash of the ids (:func:`adasparse.encoding.domain_id_from_hashes`). So the metrics
group rows exactly as the model's e_d tells them apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from adasparse.config import CategoricalField, ConfigError, FeatureConfig, ModelConfig
from adasparse.portable.columns import OOV, lookup_ids
from adasparse.portable.domain_keys import domain_keys, key_radix

FORMAT_VERSION = 1


@dataclass
class FieldVocabulary:
    """One field: ``hashes[i]`` (sorted) is the value with id ``ids[i]``; ``values`` the raw
    values in id order (``values[id - 1]``), ``counts`` their train rows."""

    name: str
    values: list[str]
    hashes: np.ndarray  # uint64, in id order (hashes[id - 1])
    counts: np.ndarray  # int64, train rows per value, in id order
    oov_train_rows: int = 0  # train rows whose value was too rare for an id of its own
    _sorted: np.ndarray = field(init=False, repr=False)
    _sorted_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.hashes, kind="stable")
        self._sorted = self.hashes[order]
        self._sorted_ids = (order + 1).astype(np.int64)

    @property
    def size(self) -> int:
        """Rows of the field's embedding slice: its values plus the out-of-vocabulary id."""
        return len(self.values) + 1

    @property
    def lookup_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(hashes ascending, the id of each): what :meth:`lookup` searches (served models carry it)."""
        return self._sorted, self._sorted_ids

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Ids of values given by their hashes; 0 for values not in the vocabulary."""
        return lookup_ids(self._sorted, self._sorted_ids, hashes)


class DomainVocabulary:
    """The vocabularies of every domain-aware field, and the train split's domains."""

    def __init__(self, fields: list[FieldVocabulary], min_count: int, train_keys: np.ndarray, train_tuples: int,
                 train_rows: int = 0, train_key_rows: np.ndarray | None = None, train_ids: np.ndarray | None = None,
                 train_positives: int | None = None):
        self.fields = fields
        self.train_rows = int(train_rows)  # rows of the train split
        self.train_positives = None if train_positives is None else int(train_positives)  # their clicks (label 1)
        self.min_count = min_count
        self.train_keys = np.asarray(train_keys, dtype=np.int64)  # sorted domain keys seen in train
        self.train_key_rows = None if train_key_rows is None else np.asarray(train_key_rows, dtype=np.int64)  # their rows
        self.train_ids = None if train_ids is None else np.asarray(train_ids, dtype=np.int64).reshape(-1, len(fields))
        self.train_tuples = int(train_tuples)  # distinct raw value tuples in train
        sizes = [f.size for f in fields]
        self._radix = key_radix(sizes)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, names: list[str], tuples: np.ndarray, counts: np.ndarray, values: list[dict[int, str]],
              min_count: int = 2, positives: int | None = None) -> "DomainVocabulary":
        """From the train split's distinct domain tuples: ``tuples`` (T, k) uint64 value hashes,
        ``counts`` (T,) their rows, ``values[j]`` the raw value of each hash of field j;
        ``positives`` the train split's rows with label 1 (its base rate, when known)."""
        if min_count < 1:
            raise ConfigError(f"domain vocabulary: min_count must be at least 1, got {min_count}")
        tuples = np.asarray(tuples, dtype=np.uint64).reshape(-1, len(names))
        counts = np.asarray(counts, dtype=np.int64)
        fields = []
        for j, name in enumerate(names):
            uniq, inv = np.unique(tuples[:, j], return_inverse=True)
            rows = np.bincount(inv.reshape(-1), weights=counts, minlength=len(uniq)).astype(np.int64)
            keep = rows >= min_count
            order = np.lexsort((uniq[keep], -rows[keep]))  # most rows first; ties by hash (deterministic)
            kept_h, kept_n = uniq[keep][order], rows[keep][order]
            missing = [h for h in kept_h.tolist() if h not in values[j]]
            if missing:
                raise ValueError(f"domain field {name!r}: no raw value recorded for hash {missing[0]:#x}")
            fields.append(FieldVocabulary(name, [values[j][h] for h in kept_h.tolist()], kept_h, kept_n,
                                          int(rows[~keep].sum())))
        vocab = cls(fields, min_count, np.zeros(0, np.int64), len(tuples), int(counts.sum()), train_positives=positives)
        ids = vocab.ids_of_hashes(tuples)
        keys, first, inv = np.unique(vocab.keys(ids), return_index=True, return_inverse=True)
        vocab.train_keys = keys
        vocab.train_key_rows = np.bincount(inv.reshape(-1), weights=counts, minlength=len(keys)).astype(np.int64)
        vocab.train_ids = ids[first]
        return vocab

    @classmethod
    def from_rows(cls, names: list[str], hashes: np.ndarray, raw: list[np.ndarray], min_count: int = 2,
                  labels: np.ndarray | None = None) -> "DomainVocabulary":
        """From the train rows themselves (in memory): ``hashes`` (n, k) value hashes, ``raw[j]``
        field j's raw values, ``labels`` their labels (for the base rate)."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, len(names))
        tuples, first, counts = np.unique(hashes, axis=0, return_index=True, return_counts=True)
        values = [{int(h): str(v) for h, v in zip(tuples[:, j].tolist(), np.asarray(raw[j])[first].tolist())}
                  for j in range(len(names))]
        positives = None if labels is None else int(np.count_nonzero(np.asarray(labels) == 1))
        return cls.build(names, tuples, counts, values, min_count, positives)

    # -- applying ----------------------------------------------------------------------------
    def ids_of_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """(n, k) value hashes → (n, k) int64 ids."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, len(self.fields))
        return np.stack([f.lookup(hashes[:, j]) for j, f in enumerate(self.fields)], axis=1) if len(self.fields) else \
            np.zeros((len(hashes), 0), np.int64)

    def keys(self, ids: np.ndarray) -> np.ndarray:
        """(n, k) ids → (n,) int64 domain keys (exact mixed radix, or a hash when it cannot fit)."""
        return domain_keys(np.asarray(ids, dtype=np.int64).reshape(-1, len(self.fields)), self._radix)

    def domains_with_rows(self, min_rows: int) -> np.ndarray:
        """(n, k) id tuples of the train domains with at least ``min_rows`` train rows."""
        if self.train_ids is None or self.train_key_rows is None:
            raise ConfigError("domain vocabulary: no train rows per domain (built before per-domain models existed)")
        return self.train_ids[self.train_key_rows >= min_rows]

    def seen_in_train(self, keys: np.ndarray) -> np.ndarray:
        """Whether each domain key was a domain of the train split."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(self.train_keys):
            return np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self.train_keys, keys), len(self.train_keys) - 1)
        return self.train_keys[pos] == keys

    @property
    def base_rate(self) -> float | None:
        """The train split's click rate (positives / rows), None when not counted."""
        if self.train_positives is None or not self.train_rows:
            return None
        return self.train_positives / self.train_rows

    @property
    def distinguished(self) -> int:
        """Distinct train domains the model's e_d tells apart (distinct id tuples)."""
        return len(self.train_keys)

    def features(self, features: FeatureConfig) -> FeatureConfig:
        """``features`` with each domain field's rows set to its vocabulary's size."""
        names = [f.name for f in features.domain_fields]
        if names != [f.name for f in self.fields]:
            raise ConfigError(f"domain vocabulary: fields {[f.name for f in self.fields]} do not match the data's {names}")
        return FeatureConfig(
            domain_fields=[CategoricalField(name=f.name, buckets=max(2, f.size)) for f in self.fields],
            categorical_fields=features.categorical_fields,
            numeric_fields=features.numeric_fields,
        )

    def summary(self) -> dict:
        return {"fields": {f.name: {"values": len(f.values), "oov_train_rows": f.oov_train_rows} for f in self.fields},
                "min_count": self.min_count, "train": self.train_tuples, "distinguished": self.distinguished,
                "train_rows": self.train_rows, "train_positives": self.train_positives}

    # -- storing -----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT_VERSION,
            "min_count": self.min_count,
            "train_tuples": self.train_tuples,
            "train_rows": self.train_rows,
            "train_positives": self.train_positives,
            "fields": [{"name": f.name, "values": f.values, "hashes": [f"{h:016x}" for h in f.hashes.tolist()],
                        "counts": f.counts.tolist(), "oov_train_rows": f.oov_train_rows} for f in self.fields],
            "train_keys": self.train_keys.tolist(),
            "train_key_rows": None if self.train_key_rows is None else self.train_key_rows.tolist(),
            "train_ids": None if self.train_ids is None else self.train_ids.tolist(),
        })

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary") -> "DomainVocabulary":
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT_VERSION}")
            fields = [FieldVocabulary(f["name"], list(f["values"]), np.array([int(h, 16) for h in f["hashes"]], dtype=np.uint64),
                                      np.array(f["counts"], dtype=np.int64), int(f["oov_train_rows"])) for f in d["fields"]]
            rows, ids = d.get("train_key_rows"), d.get("train_ids")
            return cls(fields, int(d["min_count"]), np.array(d["train_keys"], dtype=np.int64), int(d["train_tuples"]),
                       int(d["train_rows"]), None if rows is None else np.array(rows), None if ids is None else np.array(ids),
                       d.get("train_positives"))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{source}: not a domain vocabulary: {err}") from None

    def fingerprint(self) -> str:
        """A short digest of the ids (fields, values, order): equal vocabularies, equal ids."""
        import hashlib

        h = hashlib.blake2b(digest_size=8)
        for f in self.fields:
            h.update(f.name.encode())
            h.update(f.hashes.tobytes())
        return h.hexdigest()


__all__ = ["DomainVocabulary", "FieldVocabulary", "OOV", "domain_min_rows", "with_domain_rows"]


def domain_min_rows(cfg: ModelConfig) -> int | None:
    """Train rows a domain needs for its own per-domain row (STAR, MAML); None: no such rows."""
    return {"star": cfg.star.min_domain_rows, "maml": cfg.maml.min_domain_rows}.get(cfg.kind)


def with_domain_rows(cfg: ModelConfig, vocabulary: DomainVocabulary) -> ModelConfig:
    """``cfg`` with the per-domain rows the data decides: for STAR's parameters and MAML's
    support buffers one row per train domain with enough train rows, plus the shared row 0."""
    need = domain_min_rows(cfg)
    if need is None:
        return cfg
    return cfg.model_copy(update={"domain_slots": len(vocabulary.domains_with_rows(need)) + 1})
