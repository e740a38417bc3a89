"""Typed values for frozen dataclasses: YAML and command-line strings onto the fields' types.

A value typed on the command line (:class:`RawString`) is parsed as YAML according to the type of
its field; values from YAML files are checked against it. Every error names the dotted key, the
value and what the type allows. Used by :mod:`tfcam.config`; no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from tfcam.errors import UserError


class RawString(str):
    """A value typed on the command line: parsed according to the field's type."""


_NONE_WORDS = ("null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def read_yaml(path: Path, what: str = "experiment file") -> dict[str, Any]:
    """A YAML file that must hold a mapping.

    Args:
        path: The file.
        what: What the file is, for messages ("experiment file", "run config").

    Raises:
        UserError: One line naming the file: bytes that are not UTF-8, a YAML syntax error, or
            something other than a mapping at the top level.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        # YAML files are UTF-8 (YAML 1.2, section 5.2); say where the first bad byte is.
        line = e.object[: e.start].count(b"\n") + 1
        raise UserError(
            f"Cannot read {what} '{path}': byte 0x{e.object[e.start]:02x} on line {line} is "
            "not UTF-8; save the file as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Cannot read {what} '{path}': {first}") from None
    if not isinstance(raw, dict):
        raise UserError(f"The {what} '{path}' must hold a mapping at the top level")
    return raw


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(raw, "train.epochs", 3)`` sets ``raw["train"]["epochs"]``, making mappings."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = typing.get_type_hints(cls)
    return _HINT_CACHE[cls]


def coerce_dataclass(cls: type, raw: Any, prefix: str = "") -> Any:
    """``cls(**raw)`` with every value checked or converted to its field's type.

    Raises:
        UserError: An unknown key (with the nearest valid one) or a value of the wrong type.
    """
    if isinstance(raw, RawString):
        raw = _parse_raw(raw, f"{prefix.rstrip('.')}")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UserError(
            f"Invalid value for {prefix.rstrip('.') or 'the experiment'}: {raw!r} (expected a mapping)"
        )
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(unknown_key_message(f"{prefix}{key}", field_keys(cls, prefix)))
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def nearest_keys(key: str, valid: list[str], n: int = 5) -> list[str]:
    """At most ``n`` valid keys closest to ``key``, best first: each scored by the better of its
    whole dotted name and its last part against what was typed (``epoch`` finds
    ``train.epochs``); keys scoring under 0.5 are left out."""
    last = key.rsplit(".", 1)[-1]

    def score(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        part = difflib.SequenceMatcher(None, last, candidate.rsplit(".", 1)[-1]).ratio()
        return max(whole, part)

    scored = sorted(((score(c), c) for c in valid), key=lambda sc: -sc[0])
    return [c for s, c in scored[:n] if s >= 0.5]


def unknown_key_message(key: str, valid: list[str]) -> str:
    """One line: the unknown key, at most five nearest valid keys, and how to list them all."""
    section = key.rpartition(".")[0]
    where = f" under '{section}'" if section else ""
    sections = [k.rsplit(".", 1)[0] for k in valid if "." in k[len(section) + 1 :]]
    close = nearest_keys(key, list(dict.fromkeys([*valid, *sections])))
    hint = ""
    if close:
        hint = f" Did you mean '{close[0]}'?"
        if len(close) > 1:
            hint += f" Other near keys: {', '.join(close[1:])}."
    return f"Unknown config key '{key}'{where}.{hint} List every key with: tfcam config EXPERIMENT"


def _parse_raw(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(str(text))
    except yaml.YAMLError:
        raise UserError(f"Invalid value for {key}: '{text}' (not valid YAML)") from None


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    bad = UserError(f"Invalid value for {key}: {value!r} (expected {_describe(tp)})")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return coerce_dataclass(tp, value, f"{key}.")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return allowed[allowed.index(value)]  # the plain value, not a command-line string
        raise UserError(
            f"Invalid value for {key}: {value!r}. Choose from: {', '.join(map(str, allowed))}"
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            if value is None or (isinstance(value, RawString) and value.lower() in _NONE_WORDS):
                return None
            rest = [a for a in args if a is not type(None)]
            return _coerce(value, rest[0], key) if len(rest) == 1 else value
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value.lower() in _TRUE_WORDS:
                return True
            if value.lower() in _FALSE_WORDS:
                return False
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, RawString):
            parsed = _parse_raw(value, key)
            value = (
                parsed
                if isinstance(parsed, list)
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
        raise bad
    if origin is dict:
        _key_tp, val_tp = typing.get_args(tp)
        if isinstance(value, RawString):
            value = _parse_raw(value, key)
        if value is None:
            return {}
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if isinstance(v, RawString) and val_tp is Any:
                    v = _parse_raw(v, f"{key}.{k}")
                out[str(k)] = v if val_tp is Any else _coerce(v, val_tp, f"{key}.{k}")
            return out
        raise bad
    if tp is Any:
        return _parse_raw(value, key) if isinstance(value, RawString) else value
    raise TypeError(f"config field {key}: unsupported type {tp!r}")


def field_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a dataclass, nested dataclasses flattened."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(field_keys(hint, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys
