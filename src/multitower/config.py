"""YAML configs, ``key=value`` overrides and dict -> dataclass conversion with clear errors.

A run config is a YAML mapping of sections::

    recipe: toy_lm
    train: {max_steps: 200, lr: 1.0e-3}
    model: {vocab_size: 64, d_model: 64, num_layers: 2, num_heads: 4}

Overrides on the command line use dotted keys and YAML scalars
(``train.lr=3e-4``, ``model.norm=layer``, ``train.fusion_lr=null``). Numbers like
``1e-3`` are floats (YAML 1.2), not the strings PyYAML's YAML 1.1 would make, and
only ``true``/``false`` are booleans (YAML 1.2): ``on``, ``off``, ``yes`` and ``no``
stay strings, so ``train.progress=off`` is the mode ``"off"``, not ``False``.

:func:`build_dataclass` converts a mapping into a (nested) frozen dataclass and
reports every problem at once: an unknown key (with its path and the allowed
keys), a missing required key, a value of the wrong type (key, value, expected
type), and ``__post_init__`` errors prefixed with the section path (a message
that starts with a field name, ``d_model must be ...``, names the dotted key:
``text_tower.d_model must be ...``).

Two rules let an experiment embed a model's own config dataclass as a section:

* a nested section's missing keys come from the field's default (so
  ``text_tower: {d_model: 64}`` keeps the experiment's default depth), and
* :func:`run_time_keys` marks keys of a section that the program fills in at run
  time (a vocabulary size known once the tokenizer is trained): the config file
  may not set them, the built section holds the default's value (or sibling
  sections) in the meantime, and :func:`to_plain` leaves them out.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")

_RUN_TIME = "multitower.config.run_time_keys"


class ConfigError(ValueError):
    """One or more problems in a config; ``problems`` lists them one per line."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``1e-3`` is a float, only true/false are booleans."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
# Copy the resolver lists before changing them, so yaml.SafeLoader itself is unchanged;
# YAML 1.1's yes/no/on/off booleans are dropped.
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in value if tag != _BOOL_TAG]
    for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse YAML ``text``; a syntax error becomes a :class:`ConfigError` naming ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from err


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (an empty file is an empty mapping).

    Raises:
        ConfigError: the file is missing or a directory, unreadable YAML, or not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied.

    Values are YAML scalars (``3``, ``1e-3``, ``true``, ``null``, ``[1, 2]``).

    Raises:
        ConfigError: an override without ``=``, with an empty key, or one that
            descends into a value that is not a mapping.
    """
    result = _deep_copy(config)
    problems = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(
                f"override {text!r}: expected key=value with a dotted key, e.g. train.lr=1e-3"
            )
            continue
        value = parse_yaml(raw, source=f"override {text!r}") if raw.strip() else ""
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                problems.append(f"override {text!r}: {where} is {child!r}, not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return result


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`load_yaml` then :func:`apply_overrides`."""
    return apply_overrides(load_yaml(path), overrides)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def to_plain(value: Any) -> Any:
    """Dataclasses -> dicts and tuples -> lists, recursively (for YAML/JSON dumps).

    A section's :func:`run_time_keys` are left out: they are not the config's.
    """
    return _plain(value, ())


def _plain(value: Any, omit: Sequence[str]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name), _run_time_names(f))
            for f in dataclasses.fields(value)
            if f.name not in omit
        }
    if isinstance(value, Mapping):
        return {k: _plain(v, ()) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, ()) for v in value]
    return value


def dump_yaml(config: Mapping[str, Any]) -> str:
    """YAML text of a config (dataclasses and tuples converted), keys in insertion order."""
    return yaml.safe_dump(to_plain(config), sort_keys=False)


# -- dict -> dataclass -------------------------------------------------------------------------
def run_time_keys(*keys: str, **from_fields: Mapping[str, str]) -> dict[str, Any]:
    """Field metadata: keys of a nested section that the program, not the config, sets.

    Use as ``field(default_factory=..., metadata=run_time_keys("vocab_size"))``.
    The config file may not set these keys; until the program replaces them
    (``dataclasses.replace``) the built section holds:

    * for each of ``keys``, the value in the field's default (a stand-in such as
      the smallest vocabulary the model config accepts, so its own checks run when
      the config is read);
    * for each ``from_fields`` key, a mapping of sibling fields declared earlier,
      e.g. ``towers={"speech": "speech_tower", "text": "text_tower"}`` gives
      ``towers={"speech": <the built speech_tower>, "text": <the built text_tower>}``.

    :func:`to_plain` leaves all of them out.
    """
    return {_RUN_TIME: (tuple(keys), {k: dict(v) for k, v in from_fields.items()})}


def _run_time_names(field: dataclasses.Field) -> tuple[str, ...]:
    keys, from_fields = field.metadata.get(_RUN_TIME, ((), {}))
    return (*keys, *from_fields)


def _field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def type_name(tp: Any) -> str:
    """Readable name of a type annotation (``int``, ``float | None``, ``tuple[float, float]``)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: object) -> str:
    """Dotted key path; the top level (``path == ""``) has no leading dot."""
    return f"{path}.{key}" if path else str(key)


def _wrong(path: str, value: Any, tp: Any) -> str:
    return f"{path}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})"


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Check/convert ``value`` against annotation ``tp``; append problems instead of raising."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        trials: dict[Any, list[str]] = {}
        for arm in args:
            if arm is type(None):
                continue
            trial: list[str] = []
            converted = _convert(value, arm, path, trial)
            if not trial:
                return converted
            trials[arm] = trial
        sections = [a for a in trials if _is_section(a)]
        if isinstance(value, Mapping) and sections:
            # A mapping for one of several sections: report the problems of the section
            # whose keys it matches best, not just "expected A | B".
            def unknown(arm: Any) -> int:
                names = {f.name for f in dataclasses.fields(arm)}
                return sum(k not in names for k in value)

            problems.extend(trials[min(sections, key=unknown)])
            return value
        problems.append(_wrong(path, value, tp))
        return value
    if origin is typing.Literal:
        if value not in args:
            problems.append(_wrong(path, value, tp))
        return value
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            problems.append(_wrong(path, value, tp))
            return value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                problems.append(
                    f"{path}: expected {len(args)} items ({type_name(tp)}), got {value!r}"
                )
                return value
            items = [
                _convert(v, a, f"{path}[{i}]", problems)
                for i, (v, a) in enumerate(zip(value, args))
            ]
        else:
            arm = args[0] if args else Any
            items = [_convert(v, arm, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            problems.append(_wrong(path, value, tp))
            return value
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(v, val_tp, _join(path, k), problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, path, problems)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(_wrong(path, value, tp))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(_wrong(path, value, tp))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(_wrong(path, value, tp))
            return value
        return float(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        problems.append(_wrong(path, value, tp))
    return value


def _build(
    cls: type,
    data: Any,
    path: str,
    problems: list[str],
    *,
    base: Any = None,
    fixed: Mapping[str, Any] | None = None,
) -> Any:
    """Build ``cls`` from ``data``; missing keys come from ``base`` (a ``cls`` instance)
    when given, ``fixed`` keys are set by the program and may not appear in ``data``."""
    fixed = fixed or {}
    if not isinstance(data, Mapping):
        problems.append(
            f"{path or 'config'}: expected a mapping for {cls.__name__}, got {data!r} ({type(data).__name__})"
        )
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key in fixed:
            problems.append(
                f"{_join(path, key)}: set by the program at run time, not by the config; remove it"
            )
        elif key not in fields:
            allowed = ", ".join(k for k in fields if k not in fixed)
            problems.append(
                f"{_join(path, key)}: unknown key {key!r} in {path or cls.__name__}; "
                f"allowed keys: {allowed}"
            )
    # Unknown keys alone still let the values be checked by __post_init__; a missing
    # or mistyped value does not (a default standing in for it could mislead).
    before = len(problems)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        where = _join(path, name)
        tp = hints[name]
        if name in fixed:
            kwargs[name] = fixed[name]
        elif _is_section(tp) and (name in data or _RUN_TIME in field.metadata):
            # A nested section: built on the field's default, its run-time keys filled in.
            default = getattr(base, name) if base is not None else _field_default(field)
            default = None if default is dataclasses.MISSING else default
            keys, from_fields = field.metadata.get(_RUN_TIME, ((), {}))
            inner = {k: getattr(default, k) for k in keys}
            for key, mapping in from_fields.items():
                inner[key] = {n: _sibling(s, kwargs, base, fields) for n, s in mapping.items()}
            if any(v is None for m in from_fields for v in inner[m].values()):
                continue  # a sibling section failed and said why; this one cannot be checked
            kwargs[name] = _build(
                tp, data.get(name, {}), where, problems, base=default, fixed=inner
            )
        elif name in data:
            kwargs[name] = _convert(data[name], tp, where, problems)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{where}: missing required key ({type_name(tp)})")
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        problems.append(_post_init_problem(cls, fields, path, str(err)))
        return None


def _sibling(
    name: str, built: Mapping[str, Any], base: Any, fields: Mapping[str, dataclasses.Field]
) -> Any:
    """The value of an earlier field: built from the config (None if that failed), else its default."""
    if name in built:
        return built[name]
    return getattr(base, name) if base is not None else _field_default(fields[name])


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _post_init_problem(cls: type, fields: Mapping[str, Any], path: str, message: str) -> str:
    """``path: message``, or ``path.field ...`` when the message starts with a field name
    (optionally as ``ClassName.field``), so the dotted key is named."""
    match = re.match(rf"(?:{re.escape(cls.__name__)}\.)?(\w+)\b", message)
    if match and match.group(1) in fields:
        return _join(path, message[match.start(1) :])
    return f"{path or cls.__name__}: {message}"


def build_dataclass(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    """Convert ``data`` into the (nested) dataclass ``cls``.

    Args:
        cls: a dataclass type (fields annotated with bool/int/float/str, Literal,
            ``X | None``, tuple/list/dict of those, or nested dataclasses).
        data: the mapping to convert (e.g. one YAML section).
        path: where ``data`` sits in the config, used in messages (``"train"``; ``""``
            for a dataclass describing the whole file).

    Raises:
        ConfigError: listing every unknown key, missing key, wrongly typed value
            and ``__post_init__`` error.
    """
    problems: list[str] = []
    result = _build(cls, data, path, problems)
    if problems:
        raise ConfigError(problems)
    return result


def build_sections(
    config: Mapping[str, Any], schema: Mapping[str, type], *, ignore: Sequence[str] = ()
) -> dict[str, Any]:
    """Build one dataclass per section of ``config`` following ``schema``.

    A section absent from ``config`` is built from ``{}`` (its defaults). Keys of
    ``config`` in neither ``schema`` nor ``ignore`` are reported as unknown sections.

    Raises:
        ConfigError: every problem of every section.
    """
    problems: list[str] = []
    for key in config:
        if key not in schema and key not in ignore:
            allowed = ", ".join([*ignore, *schema])
            problems.append(f"{key}: unknown section {key!r}; allowed sections: {allowed}")
    built = {
        name: _build(cls, config.get(name, {}), name, problems) for name, cls in schema.items()
    }
    if problems:
        raise ConfigError(problems)
    return built
