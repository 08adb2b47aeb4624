"""Strategy specs: one grammar to name and compose strategies, on the CLI, in YAML and in Python.

A spec names a registered strategy and its parameters; a parameter that takes a strategy (a
composer's ``inner`` step) takes a spec, so strategies nest::

    spec   := NAME [ "(" [ param { "," param } ] ")" ]       pdr(rounds=3, inner=first-finish(n=4))
            | NAME ":" param { "," param }                    self-consistency:n=3,max_tokens=64
    param  := KEY "=" value
    value  := NAME "(" ... ")"        a nested spec, kept as text for the parameter to build
            | "[" [ value { "," value } ] "]"                 a list
            | '"' JSON string '"'  |  bare text               ("null" bare is None)

Bare values are text that the registry coerces to the parameter's type (``n=3`` -> 3), as for
``-p n=3``; the flat ``name:param=value`` form cannot nest. The same spec is written

* on the command line: ``reasoning solve -s "self-consistency(n=4, inner=budget-forcing(max_think=256))"``;
* in YAML: ``strategy: "pdr(rounds=2, inner=early-exit(probe=p.json))"``, or the mapping form
  ``strategy: pdr`` with ``params: {inner: {strategy: first-finish, params: {n: 4}}}``;
* in Python: ``build("pdr(rounds=2)")``, or the objects themselves,
  ``PDR(rounds=2, inner=FirstFinish(n=4))``.

Records and resume identities carry a nested strategy as its canonical spec (`spec_of`), which
`build` turns back into the same strategy.

Example:
    >>> import reasoning.strategies
    >>> sc = build("self-consistency(n=3, inner=first-finish(n=2, max_tokens=64))")
    >>> sc.n, type(sc.inner).__name__, sc.inner.max_tokens
    (3, 'FirstFinish', 64)
    >>> spec_of(sc)
    'self-consistency(n=3, inner=first-finish(n=2, max_tokens=64))'
    >>> build(spec_of(sc)) == sc
    True
    >>> parse("pdr(drafts=[4, 2], distill=top-k)")
    ('pdr', {'drafts': ['4', '2'], 'distill': 'top-k'})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import PlainValidator

from reasoning.errors import ConfigError
from reasoning.registry import STRATEGIES, spec_of
from reasoning.strategy import Strategy

__all__ = ["Inner", "build", "build_optional", "needs_hidden_states", "parse", "spec_of"]


class _Parser:
    """A recursive-descent reader of one spec string."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"strategy spec {self.text!r}: {what} at position {self.at}")

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.at] if self.at < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.text[self.at]) if self.at < len(self.text) else "the end"
            raise self.fail(f"expected {char!r}, found {found}")
        self.at += 1

    def word(self, stop: str) -> str:
        self.skip()
        start = self.at
        while self.at < len(self.text) and self.text[self.at] not in stop:
            self.at += 1
        return self.text[start : self.at].strip()

    def spec(self) -> tuple[str, dict[str, Any]]:
        name = self.word("(:,)=[]")
        if not name:
            raise self.fail("expected a strategy name")
        params: dict[str, Any] = {}
        if self.peek() == "(":
            self.at += 1
            while self.peek() != ")":
                self.param(params, nested=True)
                if self.peek() != ",":
                    break
                self.at += 1
            self.expect(")")
        elif self.peek() == ":":
            self.at += 1
            while self.peek():
                self.param(params, nested=False)
                if self.peek() != ",":
                    break
                self.at += 1
        return name, params

    def param(self, params: dict[str, Any], *, nested: bool) -> None:
        key = self.word("=,()")
        if not key or not key.isidentifier():
            raise self.fail(f"expected param=value, got {key!r}")
        if self.peek() != "=":
            raise self.fail(f"expected param=value, got {key!r} without '='")
        self.at += 1
        if key in params:
            raise self.fail(f"parameter {key!r} given twice")
        if nested:
            params[key] = self.value()
            return
        params[key] = value = self.word(",")
        if "(" in value:
            raise self.fail(
                f"the flat form name:param=value cannot nest ({key}={value}...); write name(param=value, ...)"
            )

    def value(self) -> Any:
        first = self.peek()
        if first == "[":
            self.at += 1
            items: list[Any] = []
            while self.peek() not in ("]", ""):
                items.append(self.value())
                if self.peek() != ",":
                    break
                self.at += 1
            self.expect("]")
            return items
        if first == '"':
            start, self.at = self.at, self.at + 1
            while self.at < len(self.text) and self.text[self.at] != '"':
                self.at += 2 if self.text[self.at] == "\\" else 1
            self.expect('"')
            try:
                return json.loads(self.text[start : self.at])
            except ValueError:
                raise self.fail("bad quoted string") from None
        start = self.at
        text = self.word(",()[]")
        if self.peek() == "(":  # a nested spec: its extent, kept as text
            depth = 0
            while self.at < len(self.text):
                char = self.text[self.at]
                if char == '"':
                    self.value()
                    continue
                depth += {"(": 1, ")": -1}.get(char, 0)
                self.at += 1
                if depth == 0:
                    return self.text[start : self.at].strip()
            raise self.fail("unclosed '('")
        if not text:
            raise self.fail("expected a value")
        return None if text == "null" else text


def parse(text: str) -> tuple[str, dict[str, Any]]:
    """A spec's strategy name and its parameters (values as text, lists and nested specs).

    Raises:
        ConfigError: The spec does not follow the grammar; the message says where.
    """
    parser = _Parser(text)
    name, params = parser.spec()
    if parser.peek():
        raise parser.fail(f"unexpected {parser.text[parser.at]!r}")
    return name, params


def build(spec: str | Mapping[str, Any] | Strategy, params: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy a spec names: a spec string, a ``{strategy, params}`` mapping, or a strategy.

    `params` are added to (and override) the spec's own parameters.

    Raises:
        ConfigError: Unknown strategy or parameter, a bad value, or a spec that does not parse.
    """
    if isinstance(spec, str):
        name, own = parse(spec)
        strategy: Strategy = STRATEGIES.create(name, {**own, **(params or {})})
        return strategy
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"strategy", "params"})
        if unknown or not isinstance(spec.get("strategy"), str):
            raise ConfigError(
                f"a strategy given as a mapping needs 'strategy' (a name or spec) and optional "
                f"'params'; got keys {sorted(spec)}"
            )
        return build(spec["strategy"], {**spec.get("params", {}), **(params or {})})
    if params:
        raise ConfigError("parameters cannot be added to a strategy object: pass them to its class")
    if not callable(spec):
        raise ConfigError(f"not a strategy: {spec!r} (give a spec such as 'self-consistency(n=4)')")
    return spec


def build_optional(spec: Any) -> Strategy | None:
    """`build`, with None passing through (the validator of `Inner` parameters)."""
    return None if spec is None else build(spec)


Inner = Annotated[Strategy | None, PlainValidator(build_optional)]
"""Type of a parameter that takes a strategy: a spec string, a mapping, or a strategy object."""


def needs_hidden_states(*strategies: object) -> bool:
    """Whether any of `strategies` (a composer's inner steps) reads hidden states."""
    return any(bool(getattr(s, "needs_hidden_states", False)) for s in strategies if s is not None)
