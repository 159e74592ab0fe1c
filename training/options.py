"""One declaration per option: a recipe's pydantic config is its command line and its recipe file.

Each field of a recipe config becomes a flag of the same name (`batch_size` -> `--batch-size`, a bool
`augment` -> `--augment/--no-augment`), with the field's description as help. A recipe file
(`--config configs/mnist.yaml`) sets fields by the same names; flags given on the command line win over
it, and it wins over the defaults, as in timm's two-stage parse. Pydantic validates the result once.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import click
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from training.errors import UserError

TASK_KEY = "task"  # a recipe file may name its recipe, so that `train --config FILE` needs no TASK


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def click_options(config: type[BaseModel]) -> list[click.Option]:
    """A flag per field; every default is None ("not given"), so the file and the config's defaults hold."""
    return [_option(name, field) for name, field in config.model_fields.items()]


def _option(name: str, field: FieldInfo) -> click.Option:
    annotation = _without_none(field.annotation)
    help_text = field.description or name.replace("_", " ")
    if field.is_required():
        help_text += " [required unless in --config]"
    elif field.default is not None:
        help_text += f" [default: {field.default}]"
    if annotation is bool:
        return click.Option([f"{flag(name)}/--no-{flag(name)[2:]}"], default=None, help=help_text)
    kind = {int: click.INT, float: click.FLOAT}.get(annotation, click.STRING)
    return click.Option([flag(name)], type=kind, default=None, help=help_text, show_default=False)


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML recipe file (a mapping of field names to values)."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must map setting names to values, not hold a {type(values).__name__}")
    return values


def resolve(
    config: type[BaseModel], file_values: dict[str, Any], flags: dict[str, Any], source: str
) -> BaseModel:
    """Defaults, then the recipe file, then the flags given; a UserError names a bad or unknown setting."""
    file_values = {k: v for k, v in file_values.items() if k != TASK_KEY}
    unknown = sorted(set(file_values) - set(config.model_fields))
    if unknown:
        raise UserError(
            f"unknown setting {unknown[0]!r} in {source}; valid: {', '.join(config.model_fields)}"
        )
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return config.model_validate({**file_values, **given})
    except ValidationError as error:
        raise UserError(describe(error, source)) from None


def describe(error: ValidationError, source: str) -> str:
    """The first problem of a validation error as one line: the flag, what is wrong, the value."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    where = f"{flag(name)} (or {name} in {source})" if name else source
    if first["type"] == "missing":
        return f"missing {where}"
    value = f", got {first['input']!r}" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"invalid {where}: {first['msg']}{value}"


def _without_none(annotation: Any) -> Any:
    """`int | None` -> int (None means "not given" on the command line anyway)."""
    if get_origin(annotation) in (Union, types.UnionType):
        remaining = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(remaining) == 1:
            return remaining[0]
    return annotation
