"""Config loading: a YAML file (``yaml.safe_load``) overlaid with flags, coerced onto a frozen dataclass.

Errors name the file and key, what was expected and what arrived. :func:`add_config_flags`
gives every key (nested ones too, ``pluto.uri`` as ``--pluto-uri``) a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import ConfigError

C = TypeVar("C")
E = TypeVar("E", bound=enum.Enum)

#: ``dataclasses.field(metadata=...)`` keys read here: the flag's help text (else the
#: field's ``#:`` comment), and the strings a ``str`` field accepts.
HELP = "help"
CHOICES = "choices"

_NONE = type(None)


def load_config(cls: type[C], path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> C:
    """Read ``path`` (YAML mapping, may be None), overlay non-None ``overrides``, validate."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: expected a UTF-8 YAML file, got a byte {exc.object[exc.start]:#04x} "
                              f"that is not UTF-8 at offset {exc.start}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at top level, got {type(loaded).__name__}")
        values.update(loaded)
    return build(cls, _overlay(values, overrides or {}), where)


def _overlay(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every non-None override applied; sections merge key by key."""
    out = dict(values)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _overlay(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def build(cls: type[C], values: Mapping[str, Any], where: str) -> C:
    """Construct dataclass ``cls`` from a mapping, coercing each value to its field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(map(str, set(values) - set(fields)))  # YAML keys need not be strings
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(fields))}"
        )
    required = [n for n, f in fields.items() if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and n not in values]
    if required:
        raise ConfigError(f"{where}: missing setting(s) {', '.join(required)}: expected a value, got none")
    hints = typing.get_type_hints(cls)
    kwargs = {
        k: coerce(f"{where}: {k}", v, hints[k], fields[k].metadata.get(CHOICES)) for k, v in values.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # The dataclass's own checks know the key but not the file.
        raise ConfigError(f"{where}: {exc}") from exc


def coerce(where: str, value: Any, hint: Any, choices: Sequence[Any] | None = None) -> Any:
    """Check ``value`` against a type hint, converting only where lossless.

    Handles bool, int, float, str, any ``enum.Enum`` (by value; strings case-insensitively),
    any dataclass (from a mapping, recursively), ``X | None``, ``tuple[X, ...]`` and
    ``dict[K, V]`` (from a mapping, keys and values each coerced).
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        if len(args) == 1:
            return coerce(where, value, args[0], choices)
        for arg in args:
            try:
                return coerce(where, value, arg, choices)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {' or '.join(map(_describe, args))}, got {value!r}")
    if origin is tuple:
        return _coerce_tuple(where, value, typing.get_args(hint))
    if origin is dict:
        return _coerce_dict(where, value, typing.get_args(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        out = _coerce_enum(where, value, hint)
        if choices is not None and out.value not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return out
    out = _coerce_scalar(where, value, hint)
    if choices is not None and out not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return out


def _coerce_scalar(where: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type {hint}")


def _coerce_enum(where: str, value: Any, hint: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, hint):
        return value
    for member in hint:
        if member.value == value and type(value) is not bool:
            return member
    if isinstance(value, str):
        for member in hint:
            if isinstance(member.value, str) and member.value.lower() == value.strip().lower():
                return member
    names = ", ".join(str(m.value) for m in hint)
    raise ConfigError(f"{where}: expected one of {names}, got {value!r}")


def _coerce_tuple(where: str, value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
    return tuple(coerce(f"{where}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))


def _coerce_dict(where: str, value: Any, args: tuple[Any, ...]) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of NAME: VALUE, got {value!r}")
    key_hint, value_hint = args
    out: dict[Any, Any] = {}
    for k, v in value.items():
        key = coerce(f"{where}: key {k!r}", k, key_hint)
        out[key] = coerce(f"{where}: {key}", v, value_hint)
    return out


def _describe(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


# --- checks for a config's __post_init__ ---------------------------------------------


def one_of(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")


def at_least(name: str, value: int | None, lo: int) -> None:
    if value is not None and value < lo:
        raise ConfigError(f"{name}: expected an integer >= {lo}, got {value}")


def as_enum(cls: type[E], name: str, value: object) -> E:
    """``value`` as a member of ``cls`` (a config built in code may pass the name)."""
    return typing.cast(E, _coerce_enum(name, value, cls))


# --- flags ----------------------------------------------------------------------------


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type[Any],
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    _prefix: str = "",
) -> None:
    """One flag per field of dataclass ``cls``: ``--field-name``, dest ``field_name``.

    A dataclass field (``adapt: AdaptConfig``) contributes one flag per sub-field
    (``--adapt-mode``, dest ``adapt.mode``). The type comes from the hint (an Enum or a
    ``choices`` entry gives choices, a bool gives ``--x/--no-x``), the help from the field's
    ``help`` metadata or its ``#:`` comment. ``aliases`` maps a dotted key to extra flag
    spellings. Every default is None, so only flags given override the file; the values
    are converted and checked by :func:`load_config`, as YAML values are.
    """
    aliases = aliases or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        key = _prefix + f.name
        hint = _strip_optional(hints[f.name])
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            add_config_flags(parser, hint, aliases=aliases, _prefix=key + ".")
            continue
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            # A list of sections (TX's receivers): the flag gives each one's first two fields
            # (name=endpoint); the rest of a section lives in the file.
            first, second = (f.name for f in dataclasses.fields(item)[:2])
            parser.add_argument("--" + key.replace("_", "-"), *aliases.get(key, ()), dest=key, default=None,
                                nargs="+", action=_SectionsAction, metavar=f"{first.upper()}={second.upper()}",
                                help=_help(f.metadata.get(HELP) or docs.get(f.name, ""), f),
                                const=(first, second))
            continue
        kwargs: dict[str, Any] = {"dest": key, "default": None}
        choices = f.metadata.get(CHOICES)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs["nargs"] = "+"
            kwargs["type"] = typing.get_args(hint)[0]
        elif typing.get_origin(hint) is dict:
            # NAME=VALUE ... becomes the mapping the YAML would hold; it merges over the file's.
            kwargs["nargs"] = "+"
            kwargs["action"] = _MappingAction
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            choices = choices or [m.value for m in hint]
            kwargs["type"] = type(choices[0])
        elif hint in (int, float, str):
            kwargs["type"] = hint
        if choices is not None:
            kwargs["choices"] = list(choices)
        elif typing.get_origin(hint) is dict:
            kwargs["metavar"] = "NAME=VALUE"
        elif hint is not bool:
            kwargs["metavar"] = f.name.upper()
        kwargs["help"] = _help(f.metadata.get(HELP) or docs.get(f.name, ""), f)
        parser.add_argument("--" + key.replace(".", "-").replace("_", "-"), *aliases.get(key, ()), **kwargs)


class _MappingAction(argparse.Action):
    """``--flag NAME=VALUE [NAME=VALUE ...]`` -> ``{NAME: VALUE, ...}`` (a ``dict`` setting)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        items = [values] if isinstance(values, str) else list(values or [])
        out: dict[str, str] = {}
        for item in items:
            name, sep, value = str(item).partition("=")
            if not sep or not name:
                parser.error(f"{option_string}: expected NAME=VALUE, got {item!r}")
            out[name] = value
        setattr(namespace, self.dest, out)


class _SectionsAction(argparse.Action):
    """``--flag A=X [B=Y ...]`` -> ``[{first: A, second: X}, ...]`` (a list of sections, ``const``
    naming their first two fields); it replaces the file's list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        first, second = self.const
        items = [values] if isinstance(values, str) else list(values or [])
        out: list[dict[str, str]] = []
        for item in items:
            name, sep, value = str(item).partition("=")
            if not sep or not name:
                parser.error(f"{option_string}: expected {first.upper()}={second.upper()}, got {item!r}")
            out.append({first: name, second: value})
        setattr(namespace, self.dest, out)


def config_parser(
    cls: type[Any], prog: str, description: str, *, aliases: Mapping[str, Sequence[str]] | None = None
) -> argparse.ArgumentParser:
    """A parser with ``--config PATH`` and one flag per key of ``cls`` (:func:`add_config_flags`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, help="YAML config file; flags override it")
    add_config_flags(parser, cls, aliases=aliases)
    return parser


def parse_config(cls: type[C], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> C:
    """Parse ``argv`` with a :func:`config_parser` parser; load ``--config`` overlaid with the flags."""
    values = flag_values(parser.parse_args(argv))
    return load_config(cls, values.pop("config", None), values)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as a nested mapping shaped like the YAML (``adapt.mode`` -> adapt: {mode})."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return out


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not _NONE]
        if len(args) == 1:
            return args[0]
    return hint


def _help(text: str, f: dataclasses.Field[Any]) -> str:
    default: Any = f.default
    if default is dataclasses.MISSING or default is None:
        return text.replace("%", "%%")
    if isinstance(default, enum.Enum):
        default = default.value
    return f"{text} (default: {default})".strip().replace("%", "%%")


_NUMPY_ATTRIBUTE = re.compile(r"^(\w+(?:\s*,\s*\w+)*)\s*:\s*\S")


def field_docs(cls: type[Any]) -> dict[str, str]:
    """Each field's documentation: its ``#:`` comment, else its entry in a numpy-style
    ``Attributes`` section of the class docstring."""
    docs: dict[str, str] = {}
    in_attributes = False
    current: list[str] = []
    for line in (inspect.getdoc(cls) or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes":
            in_attributes = True
        elif not in_attributes or not stripped or set(stripped) == {"-"}:
            continue
        elif not line[0].isspace():
            match = _NUMPY_ATTRIBUTE.match(line)
            current = [n.strip() for n in match.group(1).split(",")] if match else []
            in_attributes = match is not None
        else:
            for name in current:
                docs[name] = f"{docs.get(name, '')} {stripped}".strip()
    # Base classes first, so a field a subclass redeclares keeps the subclass's comment.
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_comment_docs(klass))
    return docs


def _comment_docs(cls: type[Any]) -> dict[str, str]:
    """The ``#:`` comment above each field in ``cls``'s own source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    comment: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and comment:
            docs[match.group(1)] = " ".join(comment)
        comment = []
    return docs
