"""A dataclass from a nested dict of YAML values: each value coerced to its field's declared type (a union, a
list, a nested dataclass, bool, int, float, str), unknown keys refused, every error naming the field. What
`load_config` builds an experiment with; written here, generic, because no library does it with our errors. And
the checks `ExperimentConfig.validate` runs on a field (a choice, a bound, a pattern, a folder name), each a
one-line error naming it."""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from sentitune.errors import ConfigError, SentituneError


def coerce(tp: Any, value: Any, where: str) -> Any:
    """Turn a YAML value into the field's declared type, or raise a ConfigError naming the field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if tp is int:
            if number != int(number):
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys are errors, not silently ignored."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {k: coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def read_yaml(path: Path, error: type[SentituneError], what: str) -> Any:
    """A YAML file's content, or `error` with one line naming the file (and the line, for a syntax error)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML ({problem})") from None


# ---------------------------------------------------------------- checks of one field


def check_name(name: str) -> None:
    """The run's name is a folder under runs/ (and a bench row's under the bench's --out): one plain path
    part, so a name such as `../x` or `/tmp/x` cannot put the run anywhere else."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or "\0" in name:
        raise ConfigError(f"name: {name!r} is not a plain folder name (no /, \\, .. or surrounding spaces); "
                          "use --out to choose where the run goes")


def check_pattern(name: str, pattern: str) -> None:
    import re

    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{name}: not a valid regular expression ({e})") from None


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def check_positive(name: str, value: float, minimum: float | None = None) -> None:
    if minimum is None:
        if not value > 0:
            raise ConfigError(f"{name}: must be > 0, got {value}")
    elif value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
