"""Dataset spec: one YAML file that makes a Parquet/CSV dataset trainable.

Example (``DIR/spec.yaml`` as written by ``adasparse generate``)::

    name: synthetic
    location: s3://my-bucket/ctr/2026-11/     # a directory, a glob, one file, or s3://bucket/prefix
    format: parquet                           # or csv
    s3: {endpoint_url: http://127.0.0.1:9000, region: us-east-1}   # optional; keys come from the environment
    label: is_click
    time: ts
    domain_fields: [{name: user_gender_id, buckets: 8}, {name: user_age_level, buckets: 16}]
    categorical_fields: [{name: item_id, buckets: 2000000}]
    numeric_fields: [price]
    split: {train: 4, dev: 1, test: 1}        # by time (the paper's protocol)
    # or, for data that comes pre-split (then ``time`` may be omitted):
    # split_files: {train: "train*.csv", dev: "val*.csv", test: "test*.csv"}

Relative locations are resolved against the spec file's directory. S3 credentials are never
read from the file: a spec with ``aws_access_key_id`` or similar keys is rejected; s3fs takes
them from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or an
instance role).

Missing values (documented handling, not errors): a null categorical value, or one listed in
``missing_values`` (default ``-1`` and the empty string), goes to the field's "missing" bucket;
a null or NaN numeric value becomes 0. Errors (one line naming the file and column): a
missing column, a column of the wrong type, a null label or one outside {0, 1}, an infinite
numeric value, a null time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from adasparse.config import CategoricalField, ConfigError, FeatureConfig, StrictModel, load_yaml, validate


class S3Options(StrictModel):
    """Where the S3 API is; credentials are deliberately not accepted here."""

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False


class SplitSpec(StrictModel):
    """Train/dev/test proportions of the time range (paper: 4:1:1 by timestamp)."""

    train: float = Field(default=4, gt=0)
    dev: float = Field(default=1, gt=0)
    test: float = Field(default=1, gt=0)

    def fractions(self) -> tuple[float, float]:
        """Cumulative fractions at the train|dev and dev|test cuts."""
        total = self.train + self.dev + self.test
        return self.train / total, (self.train + self.dev) / total


class SplitFiles(StrictModel):
    """Datasets that come pre-split: a glob per split, relative to ``location`` (a directory)."""

    train: str = Field(min_length=1)
    dev: str = Field(min_length=1)
    test: str = Field(min_length=1)


class DatasetSpec(StrictModel):
    name: str = "dataset"
    location: str = Field(min_length=1)
    format: Literal["parquet", "csv"] = "parquet"
    s3: S3Options = Field(default_factory=S3Options)
    label: str = Field(min_length=1)
    time: str | None = Field(default=None, min_length=1, description="required unless split_files is given")
    domain_fields: list[CategoricalField] = Field(min_length=1)
    categorical_fields: list[CategoricalField] = Field(default_factory=list)
    numeric_fields: list[str] = Field(default_factory=list)
    missing_values: list[str | int] = Field(default_factory=lambda: [-1, ""])
    split: SplitSpec = Field(default_factory=SplitSpec)
    split_files: SplitFiles | None = None

    @model_validator(mode="after")
    def _columns(self) -> "DatasetSpec":
        _ = self.features  # building the FeatureConfig rejects duplicate names among the feature fields
        feats = {f.name for f in self.domain_fields + self.categorical_fields} | set(self.numeric_fields)
        for key in ("label", "time"):
            if getattr(self, key) in feats:
                raise ValueError(f"{key} column {getattr(self, key)!r} is also listed as a feature")
        if self.label == self.time:
            raise ValueError("label and time must be different columns")
        if self.time is None and self.split_files is None:
            raise ValueError("time: required to split by time (or give split_files)")
        return self

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(
            domain_fields=self.domain_fields,
            categorical_fields=self.categorical_fields,
            numeric_fields=self.numeric_fields,
        )

    def with_domain_fields(self, names: list[str], source: str = "domain_fields") -> "DatasetSpec":
        """The same data with ``names`` as the domain key (a partition of the data into domains);
        the spec's other domain-aware fields become domain-agnostic inputs (hashed into their
        buckets), so the model still sees them."""
        known = {f.name: f for f in self.domain_fields + self.categorical_fields}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"{source}: {unknown[0]!r} is not a categorical field of dataset {self.name!r} "
                              f"(its fields: {', '.join(known)})")
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: a field is listed twice")
        others = [f for f in self.domain_fields + self.categorical_fields if f.name not in names]
        return self.model_copy(update={"domain_fields": [known[n] for n in names], "categorical_fields": others})

    @property
    def columns(self) -> list[str]:
        """Every column the pipeline reads."""
        cols = [f.name for f in self.domain_fields + self.categorical_fields] + list(self.numeric_fields) + [self.label]
        return cols + ([self.time] if self.time else [])

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


_CREDENTIAL_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "key", "secret", "token", "password"}


def _reject_credentials(data: object, source: str, path: str = "") -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            where = f"{path}.{k}" if path else str(k)
            if str(k).lower() in _CREDENTIAL_KEYS:
                raise ConfigError(f"{source}: {where}: credentials do not belong in a spec; set them in the environment")
            _reject_credentials(v, source, where)


def parse_spec(data: object, source: str = "spec", base_dir: Path | None = None) -> DatasetSpec:
    """Validate a mapping into a :class:`DatasetSpec`; relative local locations resolve against ``base_dir``."""
    _reject_credentials(data, source)
    spec = validate(DatasetSpec, data, source)
    if not spec.is_s3 and base_dir is not None and not Path(spec.location).is_absolute():
        spec = spec.model_copy(update={"location": str((base_dir / spec.location).resolve())})
    return spec


def load_spec(path: str | Path) -> DatasetSpec:
    """Load ``DIR/spec.yaml`` (or any spec file); errors are one line naming the file and key."""
    path = Path(path)
    return parse_spec(load_yaml(path), str(path), path.parent)
