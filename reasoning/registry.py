"""Name -> class registries with typed, validated parameters, and user strategies as plugins.

Components are frozen dataclasses whose fields are their parameters. `Registry.create`
validates a mapping of parameters (strings from the CLI are coerced) through pydantic and
raises `ConfigError` naming the bad parameter and listing the valid ones.

User strategies join `STRATEGIES` in two ways, both through `import_strategies`:

* a module named on the command line (``--import my_module`` or ``--import path/to/file.py``)
  whose classes are decorated with ``@STRATEGIES.register("name")``;
* an installed distribution that declares the entry-point group `ENTRY_POINT_GROUP` in its
  ``pyproject.toml``, naming a module (imported, its decorators register) or a class (registered
  under the entry point's name unless its module already registered it)::

      [project.entry-points."reasoning.strategies"]
      my_strategies = "my_package.strategies"
      my-vote = "my_package.vote:MyVote"

  An installed plugin that fails to load (it does not import, it names neither a module nor a
  dataclass, it takes a name already taken) is a warning naming it: the other strategies stay
  available.

Registering the same class again (a notebook cell run twice defines it anew, with the same
module and qualified name) replaces it; another class under a taken name is a `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from reasoning.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "STRATEGIES",
    "Parameter",
    "Registry",
    "import_strategies",
    "parameter_fields",
    "params_of",
    "spec_of",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """Description of one parameter of a registered component."""

    name: str
    type: str
    default: Any
    doc: str


class Registry(Generic[T]):
    """A registry of dataclass components of one kind (strategies, verifiers, ...)."""

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._aliases: dict[str, str] = {}
        self._builtins = builtins

    def _load_builtins(self) -> None:
        """Import the module that registers the built-in components, once, on the first lookup."""
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def register(self, name: str, *aliases: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering a dataclass under `name` (and `aliases`).

        The same class registered again (same module and qualified name: a notebook cell run
        twice) replaces the earlier definition.

        Raises:
            ConfigError: `name` or an alias already belongs to another class.
            TypeError: The class is not a dataclass.
        """

        def add(cls: type[T]) -> type[T]:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass to be registered")
            for key in (name, *aliases):
                owner = self._aliases.get(key, key)
                held = self._classes.get(owner)
                if held is not None and not _same_class(held, cls):
                    taken = f"{self.kind} {key!r}" + (f" (an alias of {owner!r})" if owner != key else "")
                    raise ConfigError(
                        f"{taken} is already registered to {_qualified(held)}; cannot register "
                        f"{_qualified(cls)} under it: choose another name"
                    )
            self._classes[name] = cls
            self._aliases = {a: n for a, n in self._aliases.items() if n != name}
            for alias in aliases:
                self._aliases[alias] = name
            return cls

        return add

    def holds(self, cls: type) -> bool:
        """True when `cls` (or its redefinition) is registered."""
        return any(_same_class(cls, held) for held in self._classes.values())

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._classes)

    def aliases(self, name: str) -> list[str]:
        """The other names `name` (or an alias of it) is registered under, sorted."""
        canonical = self.resolve(name)
        return sorted(a for a, n in self._aliases.items() if n == canonical)

    def resolve(self, name: str) -> str:
        """Canonical name for `name` or an alias; raises `ConfigError` listing the choices."""
        self._load_builtins()
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
            if _same_class(type(component), cls):
                return name
        return type(component).__name__

    def parameters(self, name: str) -> list[Parameter]:
        """Describe the parameters of `name`: type, default and attribute docstring."""
        cls = self.get(name)
        docs = _attribute_docs(cls)
        out = []
        for f in parameter_fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            kind = "strategy spec" if kind == "Inner" else kind  # a composer's inner step
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
        fields = parameter_fields(type(component))
        params = {f.name: getattr(component, f.name) for f in fields if not _unset_inner(f, component)}
        params = {k: spec_of(v) if _is_strategy(v) else v for k, v in params.items()}
        jsonable: dict[str, Any] = to_jsonable_python(params, fallback=str)
        return jsonable
    return {}


def _unset_inner(field: dataclasses.Field[Any], component: object) -> bool:
    """An inner-step parameter left unset (not recorded: earlier records keep their identity)."""
    return "Inner" in str(field.type) and getattr(component, field.name) is None


def _is_strategy(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and STRATEGIES.holds(type(value))


def parameter_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """A component's parameters: those its class declares, in order, then inherited ones.

    A strategy's own parameters come first, a base class's shared ones (the sampling, a step
    search's scorer) after them, whatever order `dataclasses.fields` has them in.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    order = dict.fromkeys(
        n for klass in cls.__mro__ for n in vars(klass).get("__annotations__", {}) if n in fields
    )
    return [fields[n] for n in order]


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


def _same_class(a: type, b: type) -> bool:
    """The same class, or its redefinition (same module and qualified name)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


STRATEGIES: Registry[Any] = Registry("strategy", builtins="reasoning.strategies")
"""Every strategy, by name (``reasoning.strategies`` registers the built-in ones, imported on the
first lookup)."""

ENTRY_POINT_GROUP = "reasoning.strategies"
"""Entry-point group through which installed distributions add strategies to `STRATEGIES`."""


def import_strategies(modules: Sequence[str] = (), *, installed: bool = True) -> list[str]:
    """Register user strategies: the installed plugins' (`ENTRY_POINT_GROUP`), then `modules`.

    Calling it again is harmless: modules import once, and a class registered again is the
    same class. The built-in strategies are not among them (``import reasoning.strategies``).

    Args:
        modules: Module names (looked up on ``sys.path`` and in the current directory) or paths
            of ``.py`` files, whose ``@STRATEGIES.register`` decorators register their strategies.
        installed: Also load the entry points of installed distributions.

    Returns:
        The strategy names this call added to `STRATEGIES`, sorted.

    Raises:
        ConfigError: One of `modules` cannot be found or fails to import, or takes a name held
            by another class; the message names the module. An installed plugin that fails so
            (or names neither a module nor a dataclass) is logged as a warning naming it
            instead, once per process: the other strategies stay available.
    """
    before = set(STRATEGIES.names())
    if installed:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            where = f"plugin {point.name!r} ({point.value}"
            where += f", from {point.dist.name})" if point.dist is not None else ")"
            try:
                _load_plugin(where, point.name, point.load)
            except ConfigError as exc:
                if where not in _BROKEN_PLUGINS:
                    _BROKEN_PLUGINS.add(where)
                    logger.warning("%s; its strategies are not available", exc)
    for module in modules:
        _guarded(f"strategies module {module!r}", functools.partial(_import, module))
    return sorted(set(STRATEGIES.names()) - before)


_BROKEN_PLUGINS: set[str] = set()
"""Installed plugins already warned about (each is warned about once per process)."""


def _load_plugin(where: str, name: str, load: Callable[[], Any]) -> None:
    """Load one installed plugin: import its module, or register its class under `name`.

    Raises:
        ConfigError: It fails to import, is not a module or a dataclass, or takes a taken name.
    """
    try:
        loaded = _guarded(where, load)
    except ConfigError as exc:  # its module's decorator took a taken name
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    if isinstance(loaded, type):
        if not dataclasses.is_dataclass(loaded):
            raise ConfigError(f"{where} is a class but not a dataclass: it cannot be a strategy")
        if not STRATEGIES.holds(loaded):
            try:
                STRATEGIES.register(name)(loaded)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    elif not isinstance(loaded, types.ModuleType):
        raise ConfigError(f"{where} must name a module or a strategy class")


def _guarded(where: str, load: Callable[[], Any]) -> Any:
    """Run `load`; any failure becomes a `ConfigError` naming `where` (framework errors pass)."""
    try:
        return load()
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{where}: no module named {exc.name!r} (not installed, or not on sys.path)"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc


def _import(module: str) -> object:
    """Import a module by name (the current directory searched too) or a ``.py`` file by path."""
    if module.endswith(".py"):
        path = Path(module).resolve()
        if not path.is_file():
            raise ConfigError(f"strategies module {module!r}: no such file")
        name = path.stem
        if name in sys.modules:
            if getattr(sys.modules[name], "__file__", None) == str(path):
                return sys.modules[name]
            raise ConfigError(f"strategies module {module!r}: a module named {name!r} is already imported")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"strategies module {module!r}: not a Python module")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[name]
            raise
        return loaded
    here = os.getcwd()
    added = here not in sys.path
    if added:  # like ``python -m``: a module in the current directory is found
        sys.path.insert(0, here)
    try:
        return importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(here)


_SPECIAL = set(",()[]=\"' :\\")
"""Characters that make a string parameter quoted in a spec (the spec grammar's own)."""


def spec_of(strategy: object) -> str:
    """The canonical spec of `strategy`: its name and every parameter that differs from its default.

    Example:
        >>> import reasoning.strategies
        >>> from reasoning.compose import build
        >>> spec_of(build("sc:n=3,temperature=0.5"))
        'self-consistency(n=3, temperature=0.5)'
    """
    name = STRATEGIES.name_of(strategy)
    if not dataclasses.is_dataclass(strategy) or isinstance(strategy, type):
        return name
    items = []
    for field in parameter_fields(type(strategy)):
        value = getattr(strategy, field.name)
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if value != default:
            items.append(f"{field.name}={_text(value)}")
    return f"{name}({', '.join(items)})" if items else name


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        plain = value.isprintable() and value not in ("", "null") and not set(value) & _SPECIAL
        return value if plain else json.dumps(value)
    if dataclasses.is_dataclass(value) and STRATEGIES.holds(type(value)):
        return spec_of(value)
    return json.dumps(str(value))
