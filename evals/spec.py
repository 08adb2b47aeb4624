"""The run spec: what a ``reasoning solve`` run is, as one validated value.

A `RunSpec` names the backends (engines to start, servers to use, or a scripted reply), the
strategy and its parameters, the budget, the problems (a dataset or one question), the seed,
the results file and an optional baseline. ``reasoning solve --config run.yaml`` reads one from
YAML (or JSON), the command-line flags override it, every result row records it (`Run.spec`),
and a re-run's resume identity is computed from it before any engine starts::

    backends:                       # or `backend:` for one unnamed backend
      draft: {model: qwen2.5-coder-0.5b-instruct, kv_cache_gb: 1.5}
      target: qwen2.5-coder-1.5b-instruct      # a model name: an in-process engine
    strategy: self-consistency
    params: {n: 8, temperature: 0.7}
    budget: {output_tokens: 4000}
    budgets: {draft: {output_tokens: 1000}}
    dataset: {name: gsm8k, limit: 50}
    output: results/gsm8k-sc.jsonl
    baseline: single

A backend is an `EngineConfig` (``kind: vllm``, the default), a `ServerBackend`
(``kind: openai``; a string starting with ``http://`` or ``https://`` is one) or a
`ScriptedReply` (``kind: scripted``).

Example:
    >>> spec = RunSpec.model_validate({"question": "2+2?", "backend": "0.5b", "params": {"n": 4}})
    >>> spec.backend.kind, spec.models()
    ('vllm', {'': 'qwen2.5-coder-0.5b-instruct'})
    >>> RunSpec(dataset={"name": "gsm8k", "limit": -1})
    Traceback (most recent call last):
    ...
    reasoning.errors.ConfigError: invalid run spec: dataset.limit must be greater than or equal to 0 (got -1)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from reasoning.backends.specs import (
    BackendSpec,
    ScriptedReply,
    ServerBackend,
    VLLMEngine,
    backend_kind,
)
from reasoning.budget import Budget
from reasoning.config import Settings
from reasoning.errors import ConfigError
from reasoning.problem import Problem
from reasoning.strategy import Strategy

__all__ = ["BackendSpec", "DatasetSpec", "RunSpec", "read_spec"]


def _seeded(value: Any, seed: Any) -> Any:
    """An engine's seed is the run's unless given."""
    value = backend_kind(value)
    if isinstance(value, Mapping) and value.get("kind") == "vllm" and "seed" not in value:
        return {**value, "seed": seed}
    return value


def _budget_lines(value: Any) -> Any:
    if isinstance(value, Mapping):
        lines = [f.name for f in dataclasses.fields(Budget)]
        unknown = sorted(set(value) - set(lines))
        if unknown:
            raise ValueError(f"budget line {unknown[0]!r} is not one of {', '.join(lines)}")
    return value


BudgetLines = Annotated[Budget, BeforeValidator(_budget_lines)]


class DatasetSpec(Settings):
    """Which problems to solve."""

    what: ClassVar[str] = "dataset"

    name: str
    """gsm8k, gsm8k-train, math500, aime24, a .jsonl file, ``gym:<task>`` or ``hf:<id>``."""
    limit: int | None = Field(default=None, ge=0)
    """Solve at most this many problems (after `offset`)."""
    offset: int = Field(default=0, ge=0)
    """Skip this many problems first."""
    fields: dict[str, str] = Field(default_factory=dict)
    """JSONL / Hugging Face field mapping, e.g. ``{question: problem}``."""
    seed: int | None = None
    """Seed of generated datasets (reasoning-gym; None: the run's seed)."""
    grade: bool = True
    """Grade the problems: every row needs a gold answer (False, ``--no-grade``: none is graded)."""


class RunSpec(Settings):
    """Everything a ``reasoning solve`` run is (see the module docstring for the YAML form)."""

    what: ClassVar[str] = "run spec"
    tags: ClassVar[frozenset[str]] = frozenset({"vllm", "openai", "scripted"})

    backend: BackendSpec | None = None
    """The run's one backend (unnamed); with neither this nor `backends`, the default engine."""
    backends: dict[str, BackendSpec] = Field(default_factory=dict)
    """Several backends by name (the first is the default); strategies address them by name."""
    prm: str | None = None
    """Process reward model (a folder in the Qwen2.5-Math-PRM format) served beside the policy
    as backend ``prm`` (the policy is then named ``policy`` if it has no name)."""
    strategy: str = "self-consistency"
    """Strategy name or spec, nested ones included (`reasoning.compose`): ``sc(inner=first-finish)``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The strategy's parameters."""
    baseline: str | None = None
    """Also solve the problems with this strategy (``name:param=value,...``), side by side."""
    budget: BudgetLines = Field(default_factory=Budget)
    """Budget per problem."""
    budgets: dict[str, BudgetLines] = Field(default_factory=dict)
    """Budget lines of named backends, on top of `budget`."""
    dataset: DatasetSpec | None = None
    """The problems to solve (or `question`)."""
    question: str | None = None
    """One ad-hoc question instead of a dataset."""
    gold: str | None = None
    """Gold answer of `question`, to grade it."""
    seed: int = Field(default=0, ge=0, lt=2**63)
    """Run seed (per-request seeds derive from it)."""
    output: Path | None = None
    """Results JSONL (appended; a re-run resumes). None: ``results/<dataset>-<strategy>.jsonl``
    for a dataset, no file for a question."""
    concurrency: int | None = Field(default=None, gt=0)
    """Problems in flight (None: sized to the engine)."""
    imports: list[str] = Field(default_factory=list)
    """Modules or .py files whose strategies to register first."""
    ray: str | None = None
    """Spread the problems over engine replicas on a Ray cluster: ``auto`` (this machine's cluster,
    or a new local one) or a cluster's ``HOST:PORT`` (`reasoning.backends.replicas`). None: one
    engine in this process."""
    replicas: int | None = Field(default=None, gt=0)
    """Engine replicas with `ray` (None: one per node of the cluster)."""
    deterministic: bool = False
    """Reproducible records (`reasoning.Controller.deterministic`): problems and requests one at a
    time, each problem from an empty prefix cache. Needs in-process engines (not ``ray``)."""
    truncated_answers: Literal["written", "any"] = "written"
    """What counts as the answer of a sample cut short (`reasoning.Controller.truncated_answers`):
    ``written``, only an answer it wrote out in full; ``any``, its last number too."""
    routing: Literal["affinity", "round-robin"] = "affinity"
    """How `ray` replicas share the requests: all of a problem's to one replica (its prefix
    cache), or each request to the next replica."""

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            if isinstance(data.get("dataset"), str):
                data = {**data, "dataset": {"name": data["dataset"]}}
            if not data.get("backend") and not data.get("backends"):  # the default engine
                data = {**data, "backend": {"kind": "vllm"}}
            seed = data.get("seed", 0)
            if data.get("backend"):
                data = {**data, "backend": _seeded(data["backend"], seed)}
            if isinstance(data.get("backends"), Mapping):
                data = {**data, "backends": {k: _seeded(v, seed) for k, v in data["backends"].items()}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if (self.dataset is None) == (self.question is None):
            raise ValueError("give exactly one of --dataset or --question")
        if self.backend is not None and self.backends:
            raise ValueError("give one backend (backend) or several by name (backends), not both")
        if self.prm is not None:
            if any(b.kind != "vllm" for b in self.named().values()):
                raise ValueError("--prm starts an in-process pooling engine: it needs --backend vllm")
            if "prm" in self.backends:
                raise ValueError("--prm is served as backend 'prm': no --model may be named prm")
        if self.ray is None and self.replicas is not None:
            raise ValueError("replicas needs ray (--ray auto or --ray HOST:PORT)")
        if self.ray is not None and not self.ray.strip():
            raise ValueError(
                f"--ray {self.ray!r} (ray) is empty: give auto (a local cluster) or a cluster's HOST:PORT"
            )
        if self.ray is not None and self.backends:
            raise ValueError("ray replicates one backend (and --prm beside it): give one --model")
        servers = any(b.kind == "openai" for b in self.named().values())
        if self.ray is not None and servers:  # refused before the server is asked anything
            raise ValueError(
                "--ray (ray) starts engine replicas in process (--backend vllm) or scripted ones (--backend "
                "scripted); a running server (--base-url) cannot be replicated from here: drop one of them"
            )
        if self.deterministic and self.concurrency not in (None, 1):
            raise ValueError(
                f"--concurrency {self.concurrency} (concurrency): --deterministic solves one problem at a "
                "time (a problem sharing the engine's batches with another would not repeat); drop "
                "--concurrency"
            )
        if self.deterministic and (self.ray is not None or servers):
            raise ValueError(
                "--deterministic empties each engine's prefix cache before each problem: it needs "
                "in-process engines (backend vllm or scripted), not a server or --ray"
            )
        named = self.models()
        unknown = sorted(set(self.budgets) - (set(named) - {""}))
        if unknown:
            names = ", ".join(n for n in named if n) or "(none: pass backends by name)"
            raise ValueError(f"budgets name unknown backends {unknown}; named backends: {names}")
        return self

    def problems(self) -> list[Problem]:
        """The run's problems: its dataset's (loaded and checked), or its one question."""
        from reasoning.evals.datasets import load_dataset

        if self.dataset is None:
            return [Problem(id="question", question=self.question or "", answer=self.gold, kind="math")]
        data = self.dataset
        seed = self.seed if data.seed is None else data.seed
        return load_dataset(
            data.name, limit=data.limit, offset=data.offset, fields=data.fields, seed=seed, graded=data.grade
        )

    def check_backends(self, strategy: Strategy, what: str) -> None:
        """Refuse `strategy` if it calls named backends this run does not start (`backends_needed`).

        Called before any backend starts; `what` names the strategy (``--strategy spec-reason``).

        Raises:
            ConfigError: Names each missing backend and the flag (and run-spec field) that
                supplies it: ``--model NAME=MODEL`` (``backends``) for a model, ``--prm PATH``
                (``prm``) for the process reward model of ``scorer=prm``.
        """
        from reasoning.strategies.named_backends import (
            PRM_BACKEND,
            backends_needed,
            reward_backends_needed,
        )

        rewards = reward_backends_needed(strategy)
        has = set(self.models()) - {""}
        problems = []
        for name in rewards:
            if name != PRM_BACKEND:
                problems.append(
                    f"its process reward model (scorer=prm) is named {name!r}, but a run serves one only "
                    f"as {PRM_BACKEND!r} (--prm PATH; run spec field prm): drop scorer_backend={name}"
                )
            elif self.prm is None:
                problems.append(
                    f"its process reward model (scorer=prm) is backend {PRM_BACKEND!r}: serve one with "
                    "--prm PATH (run spec field prm; a Qwen2.5-Math-PRM-format folder)"
                )
        missing = [name for name in backends_needed(strategy) if name not in has and name not in rewards]
        if missing:
            shown = " and ".join(repr(name) for name in missing)
            flags = " ".join(f"--model {name}=MODEL" for name in missing)
            fields = ", ".join(f"backends.{name}" for name in missing)
            current = (
                f"this run has backends {', '.join(sorted(has))}"
                if has
                else "this run has one unnamed backend"
            )
            problems.append(
                f"it calls backends named {shown}, and {current}: give them with {flags} (or "
                f"--base-url NAME=URL; run spec fields {fields})"
                + ("; --ray replicates one backend: run it without --ray" if self.ray is not None else "")
            )
        if problems:
            raise ConfigError(f"{what}: " + "; ".join(problems))

    def named(self) -> dict[str, VLLMEngine | ServerBackend | ScriptedReply]:
        """The run's backends by name, the PRM left out (``""``: the one unnamed backend)."""
        if self.backends:
            return dict(self.backends)
        return {"": self.backend or VLLMEngine()}  # (the validator sets `backend` when neither is given)

    def models(self) -> dict[str, str | None]:
        """The model each backend serves as records name it, by backend name.

        ``""`` names the one unnamed backend; with a PRM, it is named ``policy`` and the PRM
        ``prm``. None: a server that names its model itself (`ServerBackend.model` not given).
        """
        models: dict[str, str | None] = {
            name: b.model if isinstance(b, ServerBackend) else b.served_model()
            for name, b in self.named().items()
        }
        if self.prm is not None:
            models = {("policy" if name == "" else name): model for name, model in models.items()}
            models["prm"] = self.prm
        return models

    def with_models(self, served: Mapping[str, str]) -> RunSpec:
        """This spec with the servers' model names filled in (`served` by backend name)."""
        named = {
            name: b.model_copy(update={"model": served[name]}) if name in served else b
            for name, b in self.named().items()
        }
        if self.backends:
            return self.model_copy(update={"backends": named})
        return self.model_copy(update={"backend": named[""]})

    def identity(self, strategy: Strategy) -> dict[str, Any]:
        """The resume identity of this run's results solved by `strategy` (`resume_identity`).

        Computed from the spec alone, before any backend starts; a server that names no model
        must be asked for it first (`with_models`).
        """
        from reasoning.evals.artefacts import artefact_hashes
        from reasoning.evals.run import resume_identity

        models = self.models()
        named = bool(self.backends) or self.prm is not None
        return resume_identity(
            strategy,
            model=next(iter(models.values())) or "",
            backends={name: model or "" for name, model in models.items()} if named else {},
            seed=self.seed,
            budget=self.budget,
            budgets=self.budgets,
            artefacts=artefact_hashes(strategy, models),
        )

    def label(self) -> str:
        """How the strategy is shown in progress bars and tables: its name and parameters."""
        return " ".join([self.strategy, *(f"{key}={value}" for key, value in self.params.items())])

    def record(self) -> dict[str, Any]:
        """The spec as results rows store it (`Run.spec`): JSON values, no API key."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


def read_spec(path: Path) -> dict[str, Any]:
    """The settings of a run-spec file: YAML (``.yaml``/``.yml``, or anything else) or JSON (``.json``).

    Raises:
        ConfigError: The file is missing, unreadable, or not a mapping of settings.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run spec {path}: cannot read it ({exc})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"run spec {path}: not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"run spec {path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"run spec {path}: expected a mapping of settings, got {type(data).__name__}")
    return data
