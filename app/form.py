"""Dataclass fields → form fields, form values ↔ ``hf-pept train`` command, validation by the dataclasses themselves.

Every default, help text and check lives in the config dataclasses the CLI is generated from; this module only
reads them (``dataclasses.fields`` + type hints), so the form, the command and ``--help`` cannot drift apart.
Form values are kept as the strings a user typed; :func:`coerce` turns them into typed values with a message
naming the field, and :func:`validate` instantiates each dataclass so that its own ``__post_init__`` message is
shown next to the field it names.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import shlex
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Literal, Union

KIND_BOOL, KIND_CHOICE, KIND_INT, KIND_FLOAT, KIND_STR, KIND_LIST = "bool", "choice", "int", "float", "str", "list"
GENERAL_ERROR = ""  # key of an error no single field is named in


@dataclass(frozen=True)
class FieldSpec:
    """What the form needs to know about one dataclass field."""

    owner: type
    name: str
    kind: str
    default: Any
    help: str
    optional: bool = False
    choices: tuple = ()
    item_kind: str = KIND_STR  # element kind of a list field

    @property
    def flag(self) -> str:
        return f"--{self.name}"


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        # Union[list[str], str]: the form edits it as a list (a single value is a one-element list).
        lists = [arg for arg in args if typing.get_origin(arg) in (list, tuple, set)]
        return (lists[0] if lists else str), optional
    return tp, False


def _kind_of(tp) -> tuple[str, tuple, str]:
    """(kind, choices, item kind) of a resolved type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return KIND_CHOICE, tuple(typing.get_args(tp)), KIND_STR
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return KIND_CHOICE, tuple(member.value for member in tp), KIND_STR
    if origin in (list, tuple, set):
        args = typing.get_args(tp)
        item_kind = _kind_of(args[0])[0] if args else KIND_STR
        return KIND_LIST, (), item_kind if item_kind in (KIND_INT, KIND_FLOAT) else KIND_STR
    if tp is bool:
        return KIND_BOOL, (), KIND_STR
    if tp is int:
        return KIND_INT, (), KIND_STR
    if tp is float:
        return KIND_FLOAT, (), KIND_STR
    return KIND_STR, (), KIND_STR


def field_specs(config_class: type, skip: tuple[str, ...] = ()) -> list[FieldSpec]:
    """The init fields of ``config_class`` as :class:`FieldSpec` (private ``_x`` fields and ``skip`` left out)."""
    hints = typing.get_type_hints(config_class)
    specs = []
    for f in dataclasses.fields(config_class):
        if not f.init or f.name.startswith("_") or f.name in skip:
            continue
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        kind, choices, item_kind = _kind_of(tp)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        if isinstance(default, enum.Enum):
            default = default.value
        choices = tuple(c.value if isinstance(c, enum.Enum) else c for c in choices)
        specs.append(
            FieldSpec(
                owner=config_class,
                name=f.name,
                kind=kind,
                default=default,
                help=str(f.metadata.get("help", "")),
                optional=optional or default is None,
                choices=choices,
                item_kind=item_kind,
            )
        )
    return specs


def to_text(spec: FieldSpec, value: Any) -> str:
    """How a typed value is shown in a text field (and written on the command line)."""
    if value is None:
        return ""
    if spec.kind == KIND_LIST:
        items = value if isinstance(value, (list, tuple, set)) else [value]
        return " ".join(str(item) for item in (sorted(items) if isinstance(items, set) else items))
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _number(spec: FieldSpec, text: str, kind: str) -> int | float:
    try:
        if kind == KIND_INT:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return float(text)
    except ValueError:
        what = "a whole number" if kind == KIND_INT else "a number"
        raise ValueError(f"`{spec.name}` must be {what}, got {text!r}") from None


def coerce(spec: FieldSpec, raw: Any) -> Any:
    """Typed value of a form entry; ``ValueError`` naming the field for text that is not of the field's type."""
    if spec.kind == KIND_BOOL:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(f"`{spec.name}` must be true or false, got {raw!r}")
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if spec.optional:
            return None
        raise ValueError(f"`{spec.name}` needs a value")
    if spec.kind == KIND_CHOICE:
        for choice in spec.choices:
            if str(choice) == str(raw).strip():
                return choice
        raise ValueError(f"`{spec.name}` must be one of {list(spec.choices)}, got {raw!r}")
    if spec.kind in (KIND_INT, KIND_FLOAT):
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = repr(raw)
        return _number(spec, str(raw).strip(), spec.kind)
    if spec.kind == KIND_LIST:
        items = raw if isinstance(raw, (list, tuple)) else [t for t in re.split(r"[\s,]+", str(raw).strip()) if t]
        if spec.item_kind in (KIND_INT, KIND_FLOAT):
            return [_number(spec, str(item), spec.item_kind) for item in items]
        return [str(item) for item in items]
    return str(raw).strip()


def _same(spec: FieldSpec, value: Any, default: Any) -> bool:
    if spec.kind == KIND_LIST and value is not None and default is not None:
        as_list = default if isinstance(default, (list, tuple, set)) else [default]
        return list(value) == list(as_list)
    if spec.kind == KIND_FLOAT and value is not None and default is not None:
        return float(value) == float(default)
    return value == default


def to_argv(specs: list[FieldSpec], values: dict[str, Any]) -> list[str]:
    """CLI options for the values that differ from their dataclass default (the default stays in one place)."""
    argv: list[str] = []
    for spec in specs:
        if spec.name not in values:
            continue
        value = coerce(spec, values[spec.name])
        if _same(spec, value, spec.default):
            continue
        if value is None:
            raise ValueError(f"`{spec.name}` cannot be emptied on the command line; its default is {spec.default!r}")
        if spec.kind == KIND_BOOL:
            argv += [spec.flag, "true" if value else "false"]
        elif spec.kind == KIND_LIST:
            argv += [spec.flag, *[str(item) for item in value]]
        else:
            argv += [spec.flag, to_text(spec, value)]
    return argv


def format_command(argv: list[str], prefix: tuple[str, ...] = ("hf-pept", "train")) -> str:
    """A shell command line, wrapped with backslashes one option per line when long."""
    words = [*prefix, *argv]
    one_line = shlex.join(words)
    if len(one_line) <= 100:
        return one_line
    parts, current = [], shlex.join(list(prefix))
    for word in argv:
        if word.startswith("--"):
            parts.append(current)
            current = word
        else:
            current += " " + shlex.quote(word)
    parts.append(current)
    return " \\\n  ".join(parts)


def parse_command(text: str, parser, prefix: tuple[str, ...] = ("hf-pept", "train")) -> dict[str, Any]:
    """Values of a pasted ``hf-pept train ...`` command, parsed by the CLI's own argparse ``parser``.

    Raises ``ValueError`` naming unknown options or bad values (argparse's message) instead of exiting.
    """
    try:
        words = shlex.split(text.replace("\\\n", " "))
    except ValueError as err:
        raise ValueError(f"Cannot read the command: {err}") from None
    for word in prefix:
        if words and words[0] == word:
            words = words[1:]

    def refuse(message: str):
        raise ValueError(message)

    original_error = parser.error
    parser.error = refuse  # argparse would print and exit the app process
    try:
        namespace, unknown = parser.parse_known_args(words)
    except SystemExit:
        raise ValueError(f"Cannot parse {text!r}") from None
    finally:
        parser.error = original_error
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown}; see `hf-pept train --help`")
    return vars(namespace)


def values_to_form(specs: list[FieldSpec], values: dict[str, Any]) -> dict[str, Any]:
    """Form entries (text, or bool for check boxes) for typed values; missing fields get their default."""
    out = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        out[spec.name] = bool(value) if spec.kind == KIND_BOOL else to_text(spec, value)
    return out


def _fields_named(message: str, names: list[str]) -> list[str]:
    # a whole word, not a possessive ("the method's default" does not name the field `method`)
    return [name for name in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_]|'s)", message)]


def validate(specs: list[FieldSpec], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Coerce every entry, then instantiate each owner dataclass with them so its own checks run.

    Returns (typed values, errors) where errors maps a field name (or :data:`GENERAL_ERROR`) to the message of
    the check that rejected it. A dataclass error is put next to every field its message names; when it names
    none, next to the fields changed from their default, else under :data:`GENERAL_ERROR`.
    """
    typed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        if spec.name not in values:
            continue
        try:
            typed[spec.name] = coerce(spec, values[spec.name])
        except ValueError as err:
            errors[spec.name] = str(err)
    owners: dict[type, list[FieldSpec]] = {}
    for spec in specs:
        owners.setdefault(spec.owner, []).append(spec)
    for owner, owned in owners.items():
        if any(spec.name in errors for spec in owned):
            continue  # the type error is the message to fix first
        kwargs = {spec.name: typed[spec.name] for spec in owned if spec.name in typed}
        try:
            owner(**kwargs)
        except (ValueError, TypeError) as err:
            message = str(err)
            names = [spec.name for spec in owned]
            targets = _fields_named(message, names) or [
                spec.name for spec in owned if spec.name in typed and not _same(spec, typed[spec.name], spec.default)
            ]
            for name in targets or [GENERAL_ERROR]:
                errors.setdefault(name, message)
    return typed, errors
