"""Typed configuration: dataclasses are the one source of defaults, YAML presets select values, and one
override syntax (``key.sub=value``) changes any field from the command line.

Every config field carries ``metadata={"help": ...}`` (use :func:`option`) stating its meaning and unit.
:func:`from_dict` builds nested dataclasses, rejects unknown keys with a "did you mean" hint and checks
types, so a bad YAML fails at load time with the field's dotted name, not mid-run.

Presets are YAML files in ``memtrain/configs/<recipe>/``. A mapping anywhere in a preset may start with
``base: NAME`` to inherit another preset of the same recipe (or a path) and change only some fields; this
is how variants and the experiment driver compose configs without re-encoding them as strings.

:func:`describe` lists every field as ``(dotted name, type, default, help)``; the CLI prints it as the
``--help`` of each verb, so help and defaults cannot disagree.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from memtrain.errors import MemtrainError

T = TypeVar("T")
CONFIGS = Path(__file__).resolve().parent / "configs"


def option(help: str, default: Any = dataclasses.MISSING, factory: Any = None) -> Any:  # noqa: A002
    """A dataclass field with help text; lists, dicts and dataclass types become default factories."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except MemtrainError as e:
                errors.append(str(e))
        raise MemtrainError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise MemtrainError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is dict:  # e.g. ``searchqa.paths={nq: FILE}``; unchecked, ``searchqa.paths=1`` crashed later
        if not isinstance(value, dict):
            raise MemtrainError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_check(k, kt, where): _check(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise MemtrainError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_check(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise MemtrainError(f"{where}: must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads ``1e-05`` as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # ``label=2024`` on the command line
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise MemtrainError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, validating names and types; errors name the field."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise MemtrainError(f"{where}: unknown field {key!r}{hint}")
        kwargs[key] = _check(value, hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise MemtrainError(f"{where}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MemtrainError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise MemtrainError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise MemtrainError(f"{p}: top level must be a mapping")
    return data


# ------------------------------------------------------------------------------------- presets and bases


def preset_names(recipe: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / recipe).glob("*.yaml"))


def preset_path(recipe: str, name: str) -> Path:
    """A YAML path, or the name of a preset in ``memtrain/configs/<recipe>/``."""
    p = Path(name).expanduser()
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    preset = CONFIGS / recipe / f"{name.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    if p.suffix in (".yaml", ".yml"):
        raise MemtrainError(f"config file not found: {p}")
    raise MemtrainError(
        f"{name!r} is neither a YAML file nor a {recipe} preset; presets: {', '.join(preset_names(recipe))}"
    )


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_bases(data: dict[str, Any], recipe: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Expand ``base: NAME`` at the top of ``data`` (recursively, and in nested mappings that name a
    ``recipe/preset`` as ``base: train/cpu_memtrain``)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = resolve_bases(v, recipe, seen) if isinstance(v, dict) else v
    if "base" not in out:
        return out
    name = out.pop("base")
    if not isinstance(name, str):
        raise MemtrainError(f"base: expected a preset name or path, got {name!r}")
    if "/" in name and not name.endswith((".yaml", ".yml")):  # another recipe's preset: train/cpu_memtrain
        recipe, name = name.split("/", 1)
    path = preset_path(recipe, name)
    if str(path) in seen:
        raise MemtrainError(f"base: {name!r} includes itself ({' -> '.join(seen)})")
    base = resolve_bases(load_yaml(path), recipe, (*seen, str(path)))
    return merge(base, out)


# ------------------------------------------------------------------------------------- overrides


def parse_value(raw: str) -> Any:
    """A command-line value read as YAML (``4``, ``true``, ``[5,10]``, ``null``); float fields also accept
    ``1e-5``, which YAML 1.1 leaves a string. Text YAML cannot read is kept as it is."""
    try:
        return yaml.safe_load(raw)
    except Exception:  # not only YAMLError: ValueError for 2024-13-45, AttributeError for "!!timestamp x"
        return raw


def _is_text(cls: type, parts: list[str]) -> bool:
    """Whether the dotted field ``parts`` of dataclass ``cls`` is declared ``str`` or ``str | None``."""
    tp: Any = cls
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return False
        tp = typing.get_type_hints(tp).get(part)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return set(typing.get_args(tp)) == {str, type(None)}
    return tp is str


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type | None = None) -> dict[str, Any]:
    """``a.b=value`` -> ``data["a"]["b"] = parse_value(value)``, for every item.

    With ``cls``, a field declared ``str`` takes the text as typed (``label=1.10`` is "1.10", not 1.1;
    ``out=2024-01-01`` a folder name, not a date); ``null`` still means None.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MemtrainError(f"{item!r}: expected KEY=VALUE, e.g. rollout.g1=4")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MemtrainError(f"{item!r}: {part!r} is not a section")
        value = parse_value(raw)
        if value is not None and not isinstance(value, str) and cls is not None and _is_text(cls, parts):
            value = raw.strip()
        node[parts[-1]] = value
    return data


def load_config(cls: type[T], recipe: str, preset: str | None = None, overrides: list[str] = ()) -> T:  # type: ignore[assignment]
    """``cls`` from dataclass defaults, then ``preset`` (name or YAML path), then ``key=value`` overrides."""
    data = resolve_bases(load_yaml(preset_path(recipe, preset)), recipe) if preset else {}
    return from_dict(cls, apply_overrides(data, list(overrides), cls))


# ------------------------------------------------------------------------------------- help


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """Every leaf field of ``cls`` as ``(dotted name, type, default, help)``, in declaration order."""
    hints = typing.get_type_hints(cls)
    default_obj = cls()
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", _type_name(tp), getattr(default_obj, f.name),
                         f.metadata.get("help", "")))
    return rows


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def help_text(cls: type, recipe: str, preset: str | None = None) -> str:
    """The generated field list shown by ``memtrain <verb> [PRESET] --help``: the dataclass defaults, or
    with a preset the values that preset gives (marked ``(preset)``) over them."""
    given = _flatten(resolve_bases(load_yaml(preset_path(recipe, preset)), recipe)) if preset else {}
    source = f"preset {preset} over the defaults of" if preset else "defaults from"
    lines = [f"settings (KEY=VALUE; {source} {cls.__module__}.{cls.__name__}):"]
    for name, tp, default, text in describe(cls):
        shown = given.get(name, default)
        value = yaml.safe_dump(shown, default_flow_style=True).removesuffix("...\n").strip()
        mark = " (preset)" if name in given else ""
        lines.append(f"  {name}={value}  [{tp}]{mark}  {text}")
    names = preset_names(recipe)
    if names:
        lines.append(f"\npresets (memtrain/configs/{recipe}/): {', '.join(names)}")
    return "\n".join(lines)
