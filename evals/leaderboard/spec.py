"""A leaderboard's configuration: models x strategies (with parameter sweeps) x budgets x datasets.

One YAML file says what to compare; `LeaderboardSpec.cells` expands it into `Cell` values, one
per entry x model x dataset, each with a stable `Cell.key` that names its rows in the store::

    name: gsm8k-default
    models:                                   # backends by name, as in a run spec
      0.5b: qwen2.5-coder-0.5b-instruct
      1.5b: {model: qwen2.5-coder-1.5b-instruct, kv_cache_gb: 3}
      pair:                                   # several named backends started together
        backends: {draft: qwen2.5-coder-0.5b-instruct, target: qwen2.5-coder-1.5b-instruct}
    datasets:
      gsm8k: {name: gsm8k, offset: 200, limit: 300}
      math500: {name: math500, limit: 60}
    seeds: [0]                                # repeats: every problem once per seed
    budget: {output_tokens: 4096}             # per problem, every entry (an entry may override)
    baseline: greedy                          # the entry every other is compared with
    price: {per_million_output_tokens: 0.6, per_million_prompt_tokens: 0.15}
    entries:
      - {name: greedy, strategy: single, params: {temperature: 0}}
      - name: sc
        strategy: self-consistency
        params: {n: [2, 4, 8], temperature: [0.4, 0.8]}   # a list is a sweep: 6 entries
        models: [0.5b]                                     # default: every model
        datasets: [gsm8k]                                  # default: every dataset

A list value in ``params`` (or a budget line) sweeps it: the entry expands to the product of
its lists. A cell's key is a hash of what decides its results: the strategy and all its
parameters (defaults included, so spelling a default out changes nothing), the budget, the
model and its dtype and context length, and the dataset's identity (not its limit or offset, so
a larger limit extends the same cell), and ``deterministic: true`` when set (a reproducible run
sends a problem's requests in turn from an empty prefix cache, so where a budget cuts, the
cached prompt tokens, the wall times and the engine's numerics differ from a batched run's).
Change any of those and it is a new cell: its rows never mix with the old ones. Seeds are
repeats of the same cell (rows are keyed by seed).

Example:
    >>> import reasoning.strategies
    >>> spec = LeaderboardSpec.model_validate({
    ...     "name": "demo", "models": {"m": {"kind": "scripted"}}, "datasets": {"g": "gsm8k"},
    ...     "entries": [{"strategy": "self-consistency", "params": {"n": [2, 4]}}]})
    >>> [cell.label for cell in spec.cells()]
    ['self-consistency n=2', 'self-consistency n=4']
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from reasoning import STRATEGIES, Budget, Strategy
from reasoning.backends.specs import BackendSpec, ScriptedReply, ServerBackend, VLLMEngine, backend_kind
from reasoning.compose import build, parse
from reasoning.config import Settings, describe_errors
from reasoning.errors import ConfigError, ReasoningError
from reasoning.evals.artefacts import artefact_hashes
from reasoning.evals.spec import DatasetSpec
from reasoning.registry import params_of

__all__ = ["Cell", "EntrySpec", "LeaderboardSpec", "ModelGroup", "Price", "read_leaderboard", "served_models"]

_BUDGET_LINES = tuple(f.name for f in dataclasses.fields(Budget))


class ModelGroup(Settings):
    """Several named backends run together as one leaderboard model (e.g. a draft and a target).

    Strategies that call more than one model (speculative reasoning) reach them by these names;
    the first is the run's default backend. Engines are checked to fit in memory together.
    """

    what: ClassVar[str] = "model group"

    kind: Literal["group"] = "group"
    backends: dict[str, BackendSpec] = Field(min_length=2)
    """The backends by the names strategies use (``draft``, ``target``)."""


def _model_kind(value: Any) -> Any:
    if isinstance(value, Mapping) and "backends" in value and "kind" not in value:
        return {"kind": "group", **value}
    return backend_kind(value)


ModelSpec = Annotated[
    VLLMEngine | ServerBackend | ScriptedReply | ModelGroup,
    Field(discriminator="kind"),
    BeforeValidator(_model_kind),
]
"""One leaderboard model: a backend, or a group of named backends."""


class EntrySpec(Settings):
    """One strategy with its parameters; a list value sweeps that parameter."""

    what: ClassVar[str] = "leaderboard entry"

    name: str | None = None
    """Short name (default: the strategy's); a sweep appends its swept values."""
    strategy: str
    """Strategy name or spec (`reasoning.compose`), e.g. ``self-consistency(n=4, inner=budget-forcing)``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Strategy parameters; a list is a sweep."""
    budget: dict[str, Any] | None = None
    """Budget lines per problem replacing the leaderboard's; a list is a sweep."""
    models: list[str] | None = None
    """The models it runs on (default: all)."""
    datasets: list[str] | None = None
    """The datasets it runs on (default: all)."""
    limit: int | None = Field(default=None, ge=1)
    """Solve only the first this-many problems of each dataset (costly entries on fewer problems;
    comparisons use the problems both sides solved). Not part of the cell's key: raising it
    extends the same cell."""
    over: str | None = None
    """Another entry (name or label) whose stored samples this one selects over, on the same model
    and dataset: the strategy's sampled requests are served from them, so it decodes nothing of
    its own and differs from that entry only in how it selects (`replay`)."""


class Price(Settings):
    """What compute costs, for cost-of-pass: per million tokens, or per device hour."""

    what: ClassVar[str] = "price"

    per_million_output_tokens: float = Field(default=0.0, ge=0)
    """Price of a million decoded tokens."""
    per_million_prompt_tokens: float = Field(default=0.0, ge=0)
    """Price of a million prompt tokens the prefix cache did not serve."""
    per_million_cached_tokens: float | None = Field(default=None, ge=0)
    """Price of a million prompt tokens served by the prefix cache (default: the prompt price)."""
    per_device_hour: float = Field(default=0.0, ge=0)
    """Price of an hour of the machine; a problem's share is its tokens at the engine's measured
    throughput during the run (the engine is shared by the problems in flight)."""
    currency: str = "$"
    """Printed before amounts."""

    @model_validator(mode="after")
    def _some_price(self) -> Price:
        if not (self.per_million_output_tokens or self.per_million_prompt_tokens or self.per_device_hour):
            object.__setattr__(self, "per_million_output_tokens", 1.0)
        return self


@dataclass(frozen=True)
class Cell:
    """One entry on one model and one dataset: what the store keys rows by."""

    key: str
    """Stable hash of what decides its results (see the module docstring)."""
    entry: str
    """The entry's name (the family of a sweep)."""
    label: str
    """Name and swept values, e.g. ``sc n=4 temperature=0.8``."""
    model: str
    """The model's name in the leaderboard."""
    dataset: str
    """The dataset's name in the leaderboard."""
    strategy: Strategy
    """The strategy, built and validated."""
    budget: Budget
    """Budget per problem."""
    swept: dict[str, Any]
    """The swept parameters and budget lines of this cell, by name."""
    limit: int | None = None
    """Only the first this-many problems of the dataset."""
    over: str | None = None
    """Key of the cell whose stored samples it selects over (`EntrySpec.over`)."""
    over_label: str | None = None
    """That cell's label."""

    @property
    def strategy_name(self) -> str:
        """Registered name of the strategy."""
        return STRATEGIES.name_of(self.strategy)

    def identity(self, spec: LeaderboardSpec) -> dict[str, Any]:
        """What `key` hashes: strategy, parameters, budget, model settings, dataset identity.

        Also the source cell's key (``over``), the artefacts' hashes and ``deterministic``, where
        they apply.
        """
        identity = {
            "strategy": self.strategy_name,
            "params": params_of(self.strategy),
            "budget": dataclasses.asdict(self.budget),
            "model": _model_identity(spec.models[self.model]),
            "dataset": _dataset_identity(spec.datasets[self.dataset]),
        }
        artefacts = artefact_hashes(self.strategy, served_models(spec.models[self.model]))
        return (
            identity
            | ({"over": self.over} if self.over else {})
            | ({"artefacts": artefacts} if artefacts else {})
            | ({"deterministic": True} if spec.deterministic else {})
        )


class LeaderboardSpec(Settings):
    """Everything a leaderboard compares (see the module docstring for the YAML form)."""

    what: ClassVar[str] = "leaderboard"
    tags: ClassVar[frozenset[str]] = frozenset({"vllm", "openai", "scripted"})

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """The leaderboard's name (letters, digits, ``._-``): the default store's file name."""
    store: Path | None = None
    """SQLite store (default ``results/<name>.sqlite``, relative to the working directory)."""
    models: dict[str, ModelSpec] = Field(default_factory=lambda: {"default": _default_engine()})
    """Backends by name: model names (in-process engines), engine settings, servers, or groups of
    named backends (``{backends: {draft: ..., target: ...}}``)."""
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    """Datasets by name."""
    entries: list[EntrySpec] = Field(min_length=1)
    """The strategies compared."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Repeats: every problem is solved once per seed."""
    budget: dict[str, Any] = Field(default_factory=dict)
    """Budget lines per problem of every entry (an entry's own replace them)."""
    baseline: str | None = None
    """The entry (name or label) the others are compared with (default: the first cell)."""
    price: Price = Field(default_factory=Price)
    """Compute prices for cost-of-pass."""
    concurrency: int | None = Field(default=None, gt=0)
    """Samples in flight on an engine, over all entries (default: twice its batch)."""
    imports: list[str] = Field(default_factory=list)
    """Modules or .py files whose strategies to register first."""
    deterministic: bool = False
    """Reproducible records, as ``reasoning solve --deterministic`` makes them
    (`reasoning.Controller.deterministic`): on each engine one problem at a time, in the plan's
    order, each from an empty prefix cache, its requests one after another. Re-run on the same
    engine and machine, every row repeats (timings aside). Needs in-process engines (vllm or
    scripted), not servers or ``--ray``; `concurrency` is then not used. Part of every cell's
    key: deterministic rows never mix with batched ones."""

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("datasets"), Mapping):
            datasets = {k: {"name": v} if isinstance(v, str) else v for k, v in data["datasets"].items()}
            data = {**data, "datasets": datasets}
        return data

    @model_validator(mode="after")
    def _deterministic_engines(self) -> LeaderboardSpec:
        """Refuse `deterministic` with a server: its prefix cache cannot be emptied from here."""
        servers = [name for name, model in self.models.items() if _servers(model)]
        if self.deterministic and servers:
            raise ValueError(
                "deterministic: true empties each engine's prefix cache before each problem and sends "
                "one request at a time: it needs in-process engines (vllm or scripted), and "
                + ", ".join(f"{name!r} ({', '.join(_servers(self.models[name]))})" for name in servers)
                + " is a server, whose cache and batches (other clients' requests) are not ours; "
                "start the model in process, or drop deterministic"
            )
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _every_error(cls, data: Any, handler: Any) -> Any:
        """Field errors and dangling names together, so one message lists them all."""
        names = _name_errors(data)
        try:
            spec = handler(data)
        except ValidationError as exc:
            if not names:
                raise
            raise ValueError("; ".join([describe_errors(exc, cls.tags), *names])) from None
        if names:
            raise ValueError("; ".join(names))
        return spec

    @property
    def store_path(self) -> Path:
        """The SQLite store."""
        return self.store or Path("results") / f"{self.name}.sqlite"

    def cells(self) -> list[Cell]:
        """Every entry x sweep point x model x dataset, validated; all problems listed at once.

        Raises:
            ConfigError: Some entries are invalid (an unknown strategy or parameter, a bad value,
                a bad budget line, two cells of one label): every one is listed, with its field.
        """
        cells: list[Cell] = []
        errors: list[str] = []
        for i, entry in enumerate(self.entries):
            where = f"entries[{i}]" + (f" ({entry.name})" if entry.name else "")
            try:
                strategy_name = STRATEGIES.resolve(parse(entry.strategy)[0])
            except ReasoningError as exc:
                errors.append(f"{where}.strategy: {exc}")
                continue
            budget_lines = self.budget if entry.budget is None else entry.budget
            axes = {
                **{f"params.{k}": v for k, v in entry.params.items()},
                **{f"budget.{k}": v for k, v in budget_lines.items()},
            }
            for point in _sweep(axes):
                params = {k[7:]: v for k, v in point.items() if k.startswith("params.")}
                lines = {k[7:]: v for k, v in point.items() if k.startswith("budget.")}
                swept = {k.split(".", 1)[1]: v for k, v in point.items() if isinstance(axes[k], list)}
                try:
                    strategy = build(entry.strategy, params)
                except ReasoningError as exc:
                    errors.append(f"{where}.params {_show(params)}: {exc}")
                    continue
                try:
                    budget = _budget(lines)
                except ReasoningError as exc:
                    errors.append(f"{where}.budget {_show(lines)}: {exc}")
                    continue
                name = entry.name or strategy_name
                label = " ".join([name, *(f"{k}={_value(v)}" for k, v in swept.items())])
                for model in entry.models or list(self.models):
                    missing = self._missing_backends(strategy, model)
                    if missing:
                        if f"{where}: {missing}" not in errors:  # once, not once per sweep point
                            errors.append(f"{where}: {missing}")
                        continue
                    for dataset in entry.datasets or list(self.datasets):
                        cell = Cell("", name, label, model, dataset, strategy, budget, swept, entry.limit)
                        cell = dataclasses.replace(cell, over_label=entry.over)
                        if entry.over is None:
                            cell = dataclasses.replace(cell, key=_hash(cell.identity(self)))
                        cells.append(cell)
        cells = self._resolve_over(cells, errors)
        same: dict[str, Cell] = {}
        for cell in cells:
            if cell.key and cell.key in same:
                errors.append(
                    f"entries {same[cell.key].label!r} and {cell.label!r} on {cell.model}/{cell.dataset} "
                    "have the same settings (they would share one set of rows): drop one, or change a setting"
                )
            same.setdefault(cell.key, cell)
        seen: dict[tuple[str, str, str], Cell] = {}
        for cell in cells:
            place = (cell.label, cell.model, cell.dataset)
            if place in seen:
                errors.append(
                    f"two entries are both {cell.label!r} on {cell.model}/{cell.dataset}: name them"
                )
            seen[place] = cell
        if self.baseline is not None and not any(self.baseline in (c.entry, c.label) for c in cells):
            errors.append(f"baseline {self.baseline!r} is not an entry's name or label")
        if errors:
            raise ConfigError(f"invalid leaderboard {self.name}: " + "; ".join(errors))
        return cells

    def _missing_backends(self, strategy: Strategy, model: str) -> str | None:
        """What `strategy` lacks on `model` of the named backends it calls (None: nothing).

        A strategy that calls named backends (`backends_needed`: spec-reason's draft and target,
        a judge_backend, ...) runs only on a model group that has them; a leaderboard serves no
        process reward model (``scorer=prm``).
        """
        from reasoning.strategies.named_backends import backends_needed, reward_backends_needed

        rewards = reward_backends_needed(strategy)
        if rewards:
            return (
                f"scorer=prm scores steps with a process reward model (backend {', '.join(rewards)}), "
                "which a leaderboard does not serve: use scorer=judge or scorer=value"
            )
        spec = self.models[model]
        has = set(spec.backends) if isinstance(spec, ModelGroup) else set()
        missing = [name for name in backends_needed(strategy) if name not in has]
        if not missing:
            return None
        shown = " and ".join(repr(name) for name in missing)
        current = f"a group of {', '.join(spec.backends)}" if isinstance(spec, ModelGroup) else "one backend"
        return (
            f"it calls backends named {shown}, and model {model!r} is {current}: run it on a model "
            f"group that has them (models.<name>.backends.{missing[0]}, ...), or name such models in the "
            "entry's models"
        )

    def _resolve_over(self, cells: list[Cell], errors: list[str]) -> list[Cell]:
        """Cells selecting over another entry's samples, keyed by that cell's key too."""
        resolved = []
        for cell in cells:
            if cell.over_label is None:
                resolved.append(cell)
                continue
            where = f"entry {cell.label} on {cell.model}/{cell.dataset}"
            sources = [
                c
                for c in cells
                if cell.over_label in (c.entry, c.label)
                and (c.model, c.dataset) == (cell.model, cell.dataset)
            ]
            if len(sources) != 1:
                errors.append(
                    f"{where}: over {cell.over_label!r} names "
                    + ("no entry" if not sources else f"{len(sources)} cells (name one by its label)")
                    + " on the same model and dataset"
                )
                continue
            source = sources[0]
            if source is cell:
                errors.append(f"{where}: over names the entry itself")
                continue
            if source.over_label is not None:
                errors.append(f"{where}: over {cell.over_label!r}, which itself selects over another entry")
                continue
            if isinstance(self.models[cell.model], ModelGroup):
                errors.append(f"{where}: over needs a single model, not a group")
                continue
            plain = getattr(source.strategy, "independent_samples", False) and (
                getattr(source.strategy, "inner", None) is None
            )
            if not plain or not getattr(source.strategy, "temperature", 0):
                errors.append(
                    f"{where}: over {source.label!r}, whose candidates are not independent samples of the "
                    "prompt (over needs a sampling entry with no inner strategy, temperature > 0: "
                    "self-consistency, best-of-n)"
                )
                continue
            if cell.budget != source.budget:
                errors.append(f"{where}: its budget must be {source.label}'s to select over its samples")
                continue
            wants, has = getattr(cell.strategy, "n", None), getattr(source.strategy, "n", None)
            if isinstance(wants, int) and isinstance(has, int) and wants > has:
                errors.append(f"{where}: asks for n={wants} samples; {source.label} stores {has}")
                continue
            differ = [
                name
                for name in ("temperature", "top_p", "max_tokens")
                if hasattr(cell.strategy, name)
                and hasattr(source.strategy, name)
                and getattr(cell.strategy, name) != getattr(source.strategy, name)
            ]
            if differ:
                errors.append(
                    f"{where}: its {', '.join(differ)} must be {source.label}'s to select over its samples"
                )
                continue
            limit = min((v for v in (cell.limit, source.limit) if v is not None), default=None)
            cell = dataclasses.replace(cell, over=source.key, over_label=source.label, limit=limit)
            resolved.append(dataclasses.replace(cell, key=_hash(cell.identity(self))))
        return resolved

    def baseline_of(self, cells: list[Cell], cell: Cell) -> Cell | None:
        """The baseline cell `cell` is compared with: the baseline entry on its model and dataset."""
        wanted = self.baseline or cells[0].label
        for other in cells:
            if wanted in (other.entry, other.label) and (other.model, other.dataset) == (
                cell.model,
                cell.dataset,
            ):
                return other
        return None


def served_models(model: VLLMEngine | ServerBackend | ScriptedReply | ModelGroup) -> dict[str, str | None]:
    """The model each backend of a leaderboard model serves, by backend name (``""``: unnamed)."""
    if isinstance(model, ModelGroup):
        return {name: next(iter(served_models(b).values())) for name, b in model.backends.items()}
    if isinstance(model, VLLMEngine):
        return {"": model.served_model()}
    if isinstance(model, ServerBackend):
        return {"": model.model}
    return {"": "scripted"}


def _servers(model: VLLMEngine | ServerBackend | ScriptedReply | ModelGroup) -> list[str]:
    """The URLs of the servers among a leaderboard model's backends."""
    if isinstance(model, ModelGroup):
        return [url for backend in model.backends.values() for url in _servers(backend)]
    return [model.url] if isinstance(model, ServerBackend) else []


def _name_errors(data: Any) -> list[str]:
    """Entries' models and datasets that the leaderboard does not define; repeated seeds."""
    if not isinstance(data, Mapping):
        return []
    given_models, given_datasets, given_entries = (
        data.get("models"),
        data.get("datasets"),
        data.get("entries"),
    )
    models: list[str] = [str(m) for m in given_models] if isinstance(given_models, Mapping) else ["default"]
    datasets: list[str] = [str(d) for d in given_datasets] if isinstance(given_datasets, Mapping) else []
    entries: list[Any] = given_entries if isinstance(given_entries, list) else []
    errors = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        for key, defined, what in (("models", models, "model"), ("datasets", datasets, "dataset")):
            names = entry.get(key)
            for name in names if isinstance(names, list) else []:
                if name not in defined:
                    errors.append(f"entries[{i}].{key}: {name!r} is not a {what} ({', '.join(defined)})")
    seeds = data.get("seeds")
    if isinstance(seeds, list) and len(set(map(str, seeds))) != len(seeds):
        errors.append(f"seeds repeat a value: {seeds}")
    return errors


def _sweep(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The product of the list values (a scalar is a one-point list)."""
    keys = list(values)
    options = [v if isinstance(v, list) else [v] for v in values.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*options)]


def _budget(lines: Mapping[str, Any]) -> Budget:
    unknown = sorted(set(lines) - set(_BUDGET_LINES))
    if unknown:
        raise ConfigError(f"budget line {unknown[0]!r} is not one of {', '.join(_BUDGET_LINES)}")
    try:
        values: dict[str, Any] = {
            k: None if v is None else float(v) if k == "seconds" else int(v) for k, v in lines.items()
        }
        return Budget(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"budget lines must be numbers ({exc})") from None


def _value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _show(values: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in values.items()) + "}"


def _hash(identity: Mapping[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _default_engine() -> VLLMEngine | ServerBackend | ScriptedReply | ModelGroup:
    return VLLMEngine()


def _model_identity(backend: VLLMEngine | ServerBackend | ScriptedReply | ModelGroup) -> dict[str, Any]:
    if isinstance(backend, ModelGroup):
        return {"kind": "group", "backends": {k: _model_identity(b) for k, b in backend.backends.items()}}
    if isinstance(backend, VLLMEngine):
        return {
            "kind": "vllm",
            "model": backend.served_model(),
            "dtype": backend.dtype,
            "max_model_len": backend.max_model_len,
        }
    if isinstance(backend, ServerBackend):
        return {"kind": "openai", "url": backend.url, "model": backend.model}
    return {"kind": "scripted", "script": backend.script}


def _dataset_identity(dataset: DatasetSpec) -> dict[str, Any]:
    return {"name": dataset.name, "fields": dataset.fields, "seed": dataset.seed}


def read_leaderboard(path: Path) -> LeaderboardSpec:
    """Read and validate a leaderboard file (YAML, or JSON by its suffix); strategies get registered.

    Raises:
        ConfigError: The file cannot be read or parsed, or a setting is invalid (all are listed).
    """
    import reasoning.strategies  # noqa: F401  (registers the built-in strategies)
    from reasoning.evals.spec import read_spec
    from reasoning.registry import import_strategies

    data = read_spec(path)
    imports = data.get("imports")
    import_strategies([str(i) for i in imports] if isinstance(imports, list) else [])
    try:
        return LeaderboardSpec.model_validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
