"""What a config value must be: small declarative rules (`Int(min=1)`, `Choice(...)`,
`ListOf(...)`, `Table(...)`) that each check one value and say, in one phrase, what they
expect. `config.py` attaches one rule to every field; this module knows nothing of runs.

A rule's `check(value, where, section)` returns the value (ints given for floats become
floats) or raises `Invalid` naming `where` (e.g. "trunk.hidden[1]"). `section` is the
object the value sits in, for the one rule that reads a sibling (`Keywords`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any



class Invalid(Exception):
    """A value broke its rule: `where` it sits and `problem`, e.g. "must be an integer >= 1, got -3"."""

    def __init__(self, where: str, problem: str, expected: str | None = None):
        super().__init__(f"{where} {problem}")
        self.where, self.expected = where, expected  # expected: the "must be ..." phrase, when that was the problem


def refuse(where: str, expected: str, value: Any) -> Invalid:
    return Invalid(where, f"must be {expected}, got {reprlib.repr(value)}", expected)


def registry(reference: str) -> Any:
    """The object `reference` ("package.module:NAME") names: valid names stay with the module
    that owns them, imported only when a value is checked."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Bool:
    def describe(self) -> str:
        return "true or false"

    def check(self, value, where, section=None):
        if not isinstance(value, bool):
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Int:
    min: int | None = None

    def describe(self) -> str:
        return "an integer" + ("" if self.min is None else f" >= {self.min}")

    def check(self, value, where, section=None):
        if isinstance(value, bool) or not isinstance(value, int) or (self.min is not None and value < self.min):
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Float:
    """A finite number within optional bounds; `open` names the bounds that are excluded
    ("low", "high")."""

    low: float | None = None
    high: float | None = None
    open: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"a number in {'(' if 'low' in self.open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if 'high' in self.open else ']'}")
        if self.low is not None:
            return f"a finite number {'>' if 'low' in self.open else '>='} {self.low:g}"
        return "a finite number"

    def check(self, value, where, section=None):
        if not _number(value) or not math.isfinite(value):
            raise refuse(where, self.describe(), value)
        low_ok = self.low is None or value > self.low or (value == self.low and "low" not in self.open)
        high_ok = self.high is None or value < self.high or (value == self.high and "high" not in self.open)
        if not (low_ok and high_ok):
            raise refuse(where, self.describe(), value)
        return float(value)


@dataclass(frozen=True)
class Text:
    def describe(self) -> str:
        return "a non-empty string"

    def check(self, value, where, section=None):
        if not isinstance(value, str) or not value.strip():
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Pattern:
    """A string that the regular expression `regex` matches whole; `expected` says which in words."""

    regex: str
    expected: str

    def describe(self) -> str:
        return self.expected

    def check(self, value, where, section=None):
        if not isinstance(value, str) or re.fullmatch(self.regex, value) is None:
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Choice:
    """One of the names in `owner` ("module:NAME", any iterable of names), plus `extra`."""

    owner: str
    extra: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return (*self.extra, *registry(self.owner))

    def describe(self) -> str:
        return "one of " + ", ".join(self.names())

    def check(self, value, where, section=None):
        if not isinstance(value, str) or value not in self.names():
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Maybe:
    """`rule`, or null."""

    rule: Any

    def describe(self) -> str:
        return f"{self.rule.describe()} or null"

    def check(self, value, where, section=None):
        try:
            return None if value is None else self.rule.check(value, where, section)
        except Invalid as err:
            if err.where == where and err.expected:  # the value's own type or range: null is allowed too
                raise refuse(where, self.describe(), value) from None
            raise


@dataclass(frozen=True)
class ListOf:
    """A list of `item`s: at least `min_len`, exactly `length` when set, no repeated value
    (or repeated `unique_key` of dict items) when `unique`, summing to `total` when set."""

    item: Any
    min_len: int = 0
    length: int | None = None
    unique: bool = False
    unique_key: str | None = None
    total: float | None = None

    def describe(self) -> str:
        size = (f"a list of {self.length}" if self.length is not None else
                "a non-empty list" if self.min_len == 1 else
                f"a list of at least {self.min_len}" if self.min_len else "a list")
        return f"{size}, each item {self.item.describe()}" + (f", summing to {self.total:g}" if self.total else "")

    def check(self, value, where, section=None):
        if (not isinstance(value, list) or len(value) < self.min_len
                or (self.length is not None and len(value) != self.length)):
            raise refuse(where, self.describe(), value)
        items = [self.item.check(v, f"{where}[{i}]", section) for i, v in enumerate(value)]
        keys = [v.get(self.unique_key) if self.unique_key else v for v in items] if self.unique else []
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            what = f"{self.unique_key}(s)" if self.unique_key else "entries"
            raise Invalid(where, f"repeats the {what} {reprlib.repr(repeated)}; each must appear once")
        if self.total is not None and not math.isclose(sum(items), self.total, abs_tol=1e-6):
            raise Invalid(where, f"must sum to {self.total:g}, got {reprlib.repr(value)} (sum {sum(items):g})")
        return items


def refuse_unknown(where: str, value: dict, allowed, context: str = "") -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise Invalid(where, f"has unknown key(s) {reprlib.repr(unknown)}{context}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class Json:
    """Any JSON value of the given Python types (a factory's keyword arguments, a freeze
    list or flag), left for the code it is passed to to check in depth."""

    types: tuple[type, ...] = (dict,)

    def describe(self) -> str:
        return " or ".join({dict: "a JSON object", list: "a list", bool: "true/false"}.get(t, t.__name__)
                           for t in self.types)

    def check(self, value, where, section=None):
        if not isinstance(value, self.types):
            raise refuse(where, self.describe(), value)
        return value


@dataclass(frozen=True)
class Table:
    """A JSON object whose keys each have a rule; unknown keys are refused, `required`
    keys must be present."""

    keys: dict[str, Any]
    required: tuple[str, ...] = ()

    def describe(self) -> str:
        return "an object with keys " + ", ".join(self.keys)

    def check(self, value, where, section=None):
        if not isinstance(value, dict):
            raise refuse(where, self.describe(), value)
        refuse_unknown(where, value, self.keys)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise Invalid(where, f"needs the key(s) {', '.join(missing)}, got {reprlib.repr(value)}")
        return {k: self.keys[k].check(v, f"{where}.{k}", section) for k, v in value.items()}


@dataclass(frozen=True)
class Variant:
    """A JSON object whose `key` (default `default`) picks which `Table` of options the
    rest must follow: a trunk by its "type", a sharing scheme by its "scheme"."""

    key: str
    default: str
    choice: Choice
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        return f"an object with a {self.key!r} ({', '.join(self.choice.names())}) and its options"

    def check(self, value, where, section=None):
        if not isinstance(value, dict):
            raise refuse(where, self.describe(), value)
        kind = self.choice.check(value.get(self.key, self.default), f"{where}.{self.key}")
        keys = {self.key: self.choice, **self.options[kind]}
        refuse_unknown(where, value, keys, f" for {self.key} {kind!r}")
        return Table(keys).check(value, where)


@dataclass(frozen=True)
class Keywords:
    """Keyword options of the method a sibling field names: the keys must be parameters of
    `owner[section.<sibling>]` after its first `skip` ones, every number in them finite."""

    sibling: str
    owner: str
    skip: int = 1

    def describe(self) -> str:
        return f"an object of keyword options of the {self.sibling}"

    def check(self, value, where, section=None):
        if not isinstance(value, dict):
            raise refuse(where, self.describe(), value)
        method = getattr(section, self.sibling, None)
        methods = registry(self.owner)
        allowed = list(inspect.signature(methods[method]).parameters)[self.skip:] if method in methods else []
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise Invalid(where, f"has option(s) {reprlib.repr(unknown)} that {self.sibling} {method!r} does not "
                                 f"take; it takes {', '.join(allowed) or 'none'}")
        for key, option in value.items():
            _finite_numbers(option, f"{where}.{key}")
        return value


def _finite_numbers(value: Any, where: str) -> None:
    """Refuse NaN and infinities anywhere inside a free-form option."""
    if isinstance(value, float) and not math.isfinite(value):
        raise refuse(where, "finite", value)
    for i, item in (value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()):
        _finite_numbers(item, f"{where}[{i!r}]" if isinstance(value, dict) else f"{where}[{i}]")
