"""The training job's command line, generated from :class:`pipelines.train.job_config.JobConfig`.

Every option of the config is a flag named by its path (``--model.pruner.beta 2``,
``--train.epochs 3``, ``--resources.gpu``), listed by ``--help`` with its default, grouped by
section; the model's sections also answer without the prefix (``--pruner.beta``). The round-1
flags (``--model --formulation --backbone --epochs --batch-size --lr --workers --gpu --out
--name --seed --beta --epsilon --r-min --r-max --data`` and the rest of
:data:`pipelines.train.job_config.ALIASES`) are kept as spellings of the same options. ``--config``
names a YAML file with the same keys; flags override it.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from pipelines.train.job_config import ALIASES, MODEL_SECTIONS, JobConfig, job_config

NO_VALUE = ("null", "none")
SECTION_HELP = {
    "data": "the dataset spec YAML (files, columns, features)",
    "model": "the model less its features (adasparse.config.ModelSpec); --pruner.*, --embedding.*, --star.*, --apg.*, --pepnet.* also answer",
    "optim": "Adam for dense parameters, sparse Adam for embedding rows (adasparse.config.OptimConfig)",
    "train": "the training loop (adasparse.config.TrainConfig)",
    "ingest": "streaming the train split into the workers",
    "resources": "the cluster and what each worker asks of it",
    "output": "where checkpoints and metrics go",
    "faults": "recovery from worker failures",
}


def config_leaves(cls: type[BaseModel] = JobConfig, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """(path, field) of every option, sections first to last as declared."""
    for name, field in cls.model_fields.items():
        sub = _model_type(field.annotation)
        if sub is not None:
            yield from config_leaves(sub, (*prefix, name))
        else:
            yield (*prefix, name), field


def _model_type(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _base(annotation):
    """The annotation without ``| None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _optional(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _parser_for(field: FieldInfo):
    """Text → value for pydantic to validate: lists and pairs split on commas, ``null`` → None."""
    base = _base(field.annotation)
    sequence = typing.get_origin(base) in (list, tuple)
    optional = _optional(field.annotation)

    def parse(text: str) -> Any:
        if optional and text.lower() in NO_VALUE:
            return None
        if sequence:
            return [x.strip() for x in text.split(",") if x.strip()]
        return text

    return parse


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _metavar(field: FieldInfo) -> str:
    base = _base(field.annotation)
    if typing.get_origin(base) is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(base)) + "}"
    if typing.get_origin(base) in (list, tuple):
        return "A,B,..."
    return {int: "INT", float: "FLOAT", str: "TEXT"}.get(base, "VALUE")


def _is_bool(field: FieldInfo) -> bool:
    return _base(field.annotation) is bool


def add_job_options(p: argparse.ArgumentParser) -> None:
    """``--config``, one flag per option path, and the round-1 spellings."""
    p.add_argument("--config", help="YAML run config with the same keys (the flags override it)")
    leaves = dict(config_leaves())
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, field in leaves.items():
        section = path[0] if len(path) > 1 else "data"
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} options", SECTION_HELP.get(section))
        flags = ["--" + ".".join(path)]
        if path[0] == "model" and len(path) > 2 and path[1] in MODEL_SECTIONS:
            flags.append("--" + ".".join(path[1:]))  # --pruner.beta
        help_text = f"{field.description or ''} (default: {_default_text(field)})".strip()
        kw: dict[str, Any] = {"dest": ".".join(path), "default": None, "help": help_text}
        if _is_bool(field):
            kw.update(nargs="?", const="true", metavar="true|false")
        else:
            kw.update(type=_parser_for(field), metavar=_metavar(field))
        groups[section].add_argument(*flags, **kw)
    round1 = p.add_argument_group("round-1 flags", "the same options under their round-1 names")
    for alias, path in ALIASES.items():
        flag = "--" + alias.replace("_", "-")
        field = leaves[path]
        kw = {"dest": "alias:" + alias, "default": None, "help": "= --" + ".".join(path)}
        if _is_bool(field):
            kw.update(action="store_const", const=True)
        else:
            kw.update(type=_parser_for(field), metavar=_metavar(field))
        round1.add_argument(flag, **kw)


def given_options(args: dict[str, Any]) -> dict[str, Any]:
    """The options set on the command line, keyed by the spelling used (unvalidated)."""
    out = {}
    for dest, value in args.items():
        if value is None or dest in ("config",) or not (dest.startswith("alias:") or "." in dest or dest in JobConfig.model_fields):
            continue
        out[dest.removeprefix("alias:")] = value
    return out


def parse_job_args(argv: list[str] | None, prog: str = "adasparse train", description: str = "") -> JobConfig:
    """``adasparse train``'s arguments → a validated :class:`JobConfig` (one-line :class:`ConfigError`)."""
    p = job_parser(prog, description)
    args = vars(p.parse_args(argv))
    return job_config(given_options(args), args.get("config"))


def job_parser(prog: str, description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    add_job_options(p)
    return p


__all__ = ["add_job_options", "config_leaves", "given_options", "job_parser", "parse_job_args"]
