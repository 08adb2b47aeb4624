"""Name -> class registries with typed, validated parameters.

Components are frozen dataclasses whose fields are their parameters. `Registry.create`
validates a mapping of parameters (strings from the CLI are coerced) through pydantic and
raises `ConfigError` naming the bad parameter and listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from reasoning.errors import ConfigError

__all__ = ["STRATEGIES", "Parameter", "Registry", "params_of"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Parameter:
    """Description of one parameter of a registered component."""

    name: str
    type: str
    default: Any
    doc: str


class Registry(Generic[T]):
    """A registry of dataclass components of one kind (strategies, verifiers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering a dataclass under `name` (and `aliases`)."""

        def add(cls: type[T]) -> type[T]:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass to be registered")
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._classes[name] = cls
            for alias in aliases:
                self._aliases[alias] = name
            return cls

        return add

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def resolve(self, name: str) -> str:
        """Canonical name for `name` or an alias; raises `ConfigError` listing the choices."""
        key = self._aliases.get(name, name)
        if key not in self._classes:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return key

    def get(self, name: str) -> type[T]:
        """The class registered as `name`."""
        return self._classes[self.resolve(name)]

    def name_of(self, component: object) -> str:
        """Registered name of `component`'s class (its class name when unregistered)."""
        for name, cls in self._classes.items():
            if type(component) is cls:
                return name
        return type(component).__name__

    def parameters(self, name: str) -> list[Parameter]:
        """Describe the parameters of `name`: type, default and attribute docstring."""
        cls = self.get(name)
        docs = _attribute_docs(cls)
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if not f.init or f.name.startswith("_"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            out.append(Parameter(f.name, str(kind), default, docs.get(f.name, "")))
        return out

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """Build `name` with `params`, validating and coercing every value."""
        cls = self.get(name)
        params = dict(params or {})
        valid = [p.name for p in self.parameters(name)]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(
                f"{self.kind} {self.resolve(name)!r} has no parameter {unknown[0]!r}; "
                f"valid parameters: {', '.join(valid) or '(none)'}"
            )
        try:
            return TypeAdapter(cls).validate_python(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "?"
            raise ConfigError(
                f"{self.kind} {self.resolve(name)!r}: bad parameter {where!r}: {first['msg']} "
                f"(got {first.get('input')!r})"
            ) from None


def params_of(component: object) -> dict[str, Any]:
    """The parameters of a dataclass component as JSON-ready values (for records and resume)."""
    if dataclasses.is_dataclass(component) and not isinstance(component, type):
        params = {
            f.name: getattr(component, f.name)
            for f in dataclasses.fields(component)
            if f.init and not f.name.startswith("_")
        }
        jsonable: dict[str, Any] = to_jsonable_python(params, fallback=str)
        return jsonable
    return {}


def _attribute_docs(cls: type) -> dict[str, str]:
    """Read attribute docstrings (a string literal right after a field) from the source."""
    import ast
    import inspect
    import itertools
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


STRATEGIES: Registry[Any] = Registry("strategy")
"""Every strategy, by name (``reasoning.strategies`` registers the built-in ones)."""
