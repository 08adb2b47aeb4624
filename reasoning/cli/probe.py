"""``reasoning probe``: train and calibrate probes, calibrate ATTS, from the shell.

Subcommands: collect, collect-advantage, features, train, calibrate, atts-calibrate::

    reasoning probe collect --dataset gsm8k --offset 200 --limit 200 --out probes/gsm8k-train
    reasoning probe features --traces probes/gsm8k-train.traces.jsonl
    reasoning probe train --data probes/gsm8k-train --out probes/gsm8k-exit
    reasoning probe calibrate --probe probes/gsm8k-exit --data probes/gsm8k-calib --alpha 0.1

An advantage router for ``arbitrage`` (draft and target models, judged steps)::

    reasoning probe collect-advantage --model draft=0.5b --model target=1.5b \
        --dataset gsm8k --offset 400 --limit 300 --out probes/gsm8k-adv-train
    reasoning probe train --kind advantage --data probes/gsm8k-adv-train --out probes/gsm8k-router
    reasoning probe calibrate --probe probes/gsm8k-router --data probes/gsm8k-adv-calib --escalate-rate 0.3

Keep the problems you evaluate on out of training and calibration (``--offset``/``--limit``).
ATTS' calibration (target perplexities of draft chunks, no labels) is the exception: the paper
calibrates on the test questions themselves::

    reasoning probe atts-calibrate --dataset gsm8k --offset 200 --limit 40 \\
        --model draft=0.5b --model target=1.5b --out probes/gsm8k-atts.json
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from reasoning.backend import DEFAULT_TEMPERATURE
from reasoning.backends.specs import ServerBackend, VLLMEngine
from reasoning.cli.common import (
    DEFAULTS,
    DtypeOption,
    KvCacheOption,
    backends_of,
    close,
    err,
    launch,
    launch_all,
    named_values,
    out,
    quiet_engine_logs,
    stop_on_signals,
    with_settings,
)
from reasoning.errors import ConfigError, ReasoningError

probe_app = typer.Typer(
    no_args_is_help=True, help="Train and calibrate hidden-state probes; calibrate ATTS (atts-calibrate)."
)


Model = Annotated[str | None, typer.Option(help="Embedded model, local HF folder or HF id.")]


ServerOption = Annotated[
    str | None,
    typer.Option(
        help="URL of a running server started with `reasoning serve --hidden-states`, instead of "
        "starting an engine here (--model then names the served model; default its first)."
    ),
]


def _engine(
    model: str | None, kv_cache_gb: float, hidden_states: bool, dtype: str, base_url: str | None = None
) -> Any:
    """The in-process engine, or with `base_url` a running server (`reasoning serve --hidden-states`)."""
    from reasoning.config import EngineConfig

    stop_on_signals()  # SIGTERM shuts the engine down too
    if base_url:
        backend = launch(ServerBackend(url=base_url, model=model))
        err.print(f"server ready: {backend.model} at {base_url}", highlight=False)  # type: ignore[attr-defined]
        return backend
    quiet_engine_logs(False)
    backend = launch(
        EngineConfig(model=model, kv_cache_gb=kv_cache_gb, hidden_states=hidden_states, dtype=dtype)
    )
    info = backend.engine_info  # type: ignore[attr-defined]
    err.print(f"engine ready: {backend.model}, {info['dtype']} ({info['dtype_reason']})", highlight=False)  # type: ignore[attr-defined]
    return backend


def _stem(path: Path) -> Path:
    for suffix in (".traces.jsonl", ".json", ".safetensors"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


@probe_app.command()
def collect(
    out_path: Annotated[Path, typer.Option("--out", help="Output stem; writes STEM.traces.jsonl.")],
    dataset: Annotated[
        str, typer.Option(help="gsm8k-train (fit on train problems), a .jsonl file or gym:<task>.")
    ] = "gsm8k-train",
    limit: Annotated[int, typer.Option(help="Problems to collect on.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    samples: Annotated[int, typer.Option(help="Traces per problem (value models learn from several).")] = 1,
    concurrency: Annotated[int, typer.Option(help="Traces in flight.")] = 64,
    cue_words: Annotated[
        str, typer.Option(help="Comma-separated cue words ('' for none).")
    ] = "hmm,wait,alternatively",
    step_boundary: Annotated[bool, typer.Option(help="Blank lines are decision points.")] = True,
    every: Annotated[int, typer.Option(help="Also every k generated tokens (0: off).")] = 0,
    exit_phrase: Annotated[str | None, typer.Option(help="Forced-exit phrase, ending in \\boxed{.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per trace.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = DEFAULT_TEMPERATURE,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    model: Model = None,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    features: Annotated[bool, typer.Option(help="Also compute the features (one engine start).")] = True,
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated layers (default L/4,L/2,3L/4,L).")
    ] = None,
    dtype: DtypeOption = DEFAULTS.dtype,
    base_url: ServerOption = None,
) -> None:
    """Sample traces of each problem and label their decision points by forced exits.

    Each trace is written to STEM.traces.jsonl the moment it is labelled; run the same command
    again after a stop and it collects only the traces still missing.
    """
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.probing import compute_features
    from reasoning.probes.cues import CueSet
    from reasoning.probes.exit import EXIT_PHRASE

    cues = CueSet(tuple(w for w in cue_words.split(",") if w), step_boundary, every)
    problems = load_dataset(dataset, limit=limit, offset=offset)
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    stem = _stem(out_path)
    backend = _engine(model, kv_cache_gb, features, dtype, base_url)
    chosen = [int(v) for v in layers.split(",")] if layers else None
    settings = Collection(
        cues, exit_phrase or EXIT_PHRASE, temperature, max_tokens, seed, samples, concurrency
    )

    async def go() -> None:  # one event loop: the engine's client is bound to it
        traces = await _collect_into(backend, stem, problems, settings)
        if features:
            with err.status("reading hidden states ..."):
                data = await compute_features(
                    backend,
                    traces,
                    chosen,
                    dataset=f"{dataset}[{offset}:{offset + limit}]",
                    cache=stem.with_name(stem.name + ".features"),
                )
            out.print(
                f"features: {data.save(stem)}  ({len(data)} decision points, layers {data.meta['layers']})"
            )

    try:
        asyncio.run(go())
    finally:
        close(backend)


@dataclass(frozen=True)
class Collection:
    """What decides a collection's traces (besides the model and problems)."""

    cues: Any
    exit_phrase: str
    temperature: float
    max_tokens: int
    seed: int
    samples: int
    concurrency: int = 64
    """Traces in flight (the engine decodes 64 sequences at once by default)."""


async def _collect_into(backend: Any, stem: Path, problems: list[Any], settings: Collection) -> list[Any]:
    """Collect the traces STEM.traces.jsonl still lacks (each written as it is labelled); all of them."""
    from reasoning.evals.probing import append_trace, collect_traces, collection_header, read_traces

    traces_path = stem.with_name(stem.name + ".traces.jsonl")
    keys = [(p.id, k) for p in problems for k in range(settings.samples)]
    order = {key: i for i, key in enumerate(keys)}
    on_file = read_traces(traces_path) if traces_path.is_file() else []
    kept = [t for t in on_file if (t["problem_id"], t.get("sample", 0)) in order]
    header = collection_header(
        backend,
        settings.cues,
        settings.exit_phrase,
        settings.temperature,
        0.95,
        settings.max_tokens,
        settings.seed,
    )
    for trace in on_file:  # one collection per file: `probe features` reads it whole
        if trace["collection"] != header:
            raise ConfigError(
                f"{traces_path} holds traces of another collection (model, cues, exit phrase or "
                "sampling differ); give another --out, or delete it to start over"
            )
    if traces_path.is_file():  # drop a cut-off last line before appending
        text = traces_path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            traces_path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    done = {(t["problem_id"], t.get("sample", 0)) for t in kept}
    todo = len(keys) - len(done)
    if done:
        err.print(f"resuming: {len(done)} traces already in {traces_path}, {todo} to collect")
    with err.status(f"collecting {todo} traces ({len(problems)} problems x {settings.samples}) ..."):
        fresh = await collect_traces(
            backend,
            problems,
            cues=settings.cues,
            exit_phrase=settings.exit_phrase,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=settings.seed,
            samples=settings.samples,
            concurrency=settings.concurrency,
            on_trace=lambda trace: append_trace(traces_path, trace),
            done=done,
        )
    traces = sorted([*kept, *fresh], key=lambda t: order[(t["problem_id"], t.get("sample", 0))])
    _report(traces)
    return traces


@probe_app.command()
def build(
    out_path: Annotated[
        Path, typer.Option("--out", help="Folder to write exit, difficulty and value artefacts into.")
    ],
    model: Model = None,
    dataset: Annotated[
        str, typer.Option(help="Train problems to fit on (never the test split).")
    ] = "gsm8k-train",
    problems: Annotated[int, typer.Option(help="Problems to collect on.")] = 300,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    samples: Annotated[int, typer.Option(help="Traces per problem.")] = 4,
    fit: Annotated[
        float, typer.Option(help="Share of the problems fitted on; the rest calibrate and measure.")
    ] = 2 / 3,
    alpha: Annotated[float, typer.Option(help="The exit rule's miscoverage.")] = 0.1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the traces.")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per trace.")] = 512,
    seed: Annotated[int, typer.Option(help="Collection seed (training uses seed 42).")] = 0,
    work: Annotated[
        Path | None,
        typer.Option(help="Stem of the collected traces and features (default results/probes/...)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Make artefacts below the minimum counts (cards say so).")
    ] = False,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    dtype: DtypeOption = DEFAULTS.dtype,
    base_url: ServerOption = None,
) -> None:
    """Build the exit probe, difficulty probe and value model of a model from scratch, in one go.

    Collects `samples` traces of each train problem (resumable: written as they finish), reads
    their hidden states, fits each artefact on the first `fit` share of the problems (a logistic
    head and an MLP, the better on the validation problems; the value model Platt-scaled on its
    early-stopping problems), calibrates the exit rule and measures every artefact on the
    remaining problems; prints the wall time and the held-out quality (AUROC with its
    interval, Brier score, reliability).
    """
    from dataclasses import asdict

    from reasoning.engine.models import DEFAULT_MODEL, fingerprint
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.probing import compute_features, selection_check, split_by_problem
    from reasoning.probes.cues import DEFAULT_CUES
    from reasoning.probes.data import DecisionPoints
    from reasoning.probes.exit import EXIT_PHRASE
    from reasoning.probes.probe import Probe, Underpowered, calibrate, evaluate, train_probe

    started = time.monotonic()
    chosen = load_dataset(dataset, limit=problems, offset=offset)
    if not 0 < fit < 1:
        raise ConfigError(f"--fit must be between 0 and 1, got {fit}")
    served = fingerprint(model or DEFAULT_MODEL)
    default_stem = (
        f"{served.name}-{dataset}-{offset}-{problems}x{samples}-t{temperature}-m{max_tokens}-s{seed}"
    )
    stem = _stem(work) if work else Path("results/probes") / default_stem
    settings = Collection(DEFAULT_CUES, EXIT_PHRASE, temperature, max_tokens, seed, samples)
    data = _ready_features(stem, chosen, samples, settings, asdict(served))
    cached = stem if data is not None else None
    if data is None:
        backend = _engine(model, kv_cache_gb, True, dtype, base_url)

        async def go() -> DecisionPoints:  # one event loop: the engine's client is bound to it
            traces = await _collect_into(backend, stem, chosen, settings)
            with err.status("reading hidden states ..."):
                found = await compute_features(
                    backend,
                    traces,
                    None,
                    dataset=f"{dataset}[{offset}:{offset + problems}]",
                    cache=stem.with_name(stem.name + ".features"),
                )
            found.save(stem)
            return found

        try:
            data = asyncio.run(go())
        finally:
            close(backend)
    fitting, held = split_by_problem(data, round(len(chosen) * fit))
    recipe = (
        f"reasoning probe build --model {model or 'default'} --dataset {dataset} --problems {problems} "
        f"--offset {offset} --samples {samples} --fit {fit:.4g} --alpha {alpha} --temperature {temperature} "
        f"--max-tokens {max_tokens} --seed {seed} --out {out_path}"
    )
    shortfalls: list[str] = []
    rows = []
    for kind in ("exit", "difficulty", "value"):
        tried = [train_probe(fitting, kind, hidden, force=True) for hidden in ((), (256, 64))]
        probe = max(tried, key=lambda p: _finite_or(p.card.quality[0].auroc if p.card.quality else math.nan))
        if kind == "exit":
            probe = calibrate(probe, held, alpha, force=True)
        else:
            probe.card.quality.append(evaluate(probe, held, "held-out"))
        if kind == "value":
            probe.card.training["selection_held_out"] = selection_check(probe, held)
            if probe.card.platt is not None:  # what the head alone would have scored
                head = Probe(probe.card.model_copy(update={"platt": None}), probe.arrays)
                alone = evaluate(head, held, "held-out")
                probe.card.training["unscaled_held_out"] = {
                    "brier": alone.brier,
                    "ece": alone.ece,
                    "reliability": alone.reliability,
                    "selection": selection_check(head, held),
                }
        probe.card.training["recipe"] = recipe
        measured = probe.card.quality[-1]  # on the problems held out from fitting
        if not probe.card.underpowered and not measured.auroc_low > 0.5:
            probe.card.underpowered.append(
                f"{measured.split} AUROC {measured.auroc:.3f} (95% interval {measured.auroc_low:.3f}-"
                f"{measured.auroc_high:.3f}, {measured.problems} problems) is not above chance"
            )
        shortfalls += [f"{kind}: {u}" for u in probe.card.underpowered]
        if probe.card.underpowered and not force:
            continue
        path = probe.save(out_path / kind)
        rows.append((kind, probe, path))
    _quality_table(rows)
    for kind, probe, _ in rows:
        if kind == "value":
            picked = probe.card.training.get("selection_held_out", {})
            if picked:
                out.print(
                    f"value model as the selector over each held-out problem's {samples} traces "
                    f"({int(picked['problems'])} problems): majority {picked['majority']:.3f}, "
                    f"value-weighted {picked['value_weighted']:.3f}, "
                    f"value argmax {picked['value_argmax']:.3f}, pass@{samples} {picked['pass_at_k']:.3f}"
                )
        if kind == "exit" and probe.card.calibration is not None:
            c = probe.card.calibration
            out.print(
                f"exit rule: alpha {c.alpha}, threshold {c.exit_threshold:.4f} "
                f"(n_pos {c.n_pos}, n_neg {c.n_neg}); exits at {c.calibration_exit_rate_unsafe:.3f} "
                f"of unsafe and {c.calibration_exit_rate_safe:.3f} of safe held-out points"
            )
    wall = time.monotonic() - started
    out.print(f"wall time: {wall:.0f} s  (recipe: {recipe})", highlight=False)
    if rows:
        (out_path / "BUILD.md").write_text(_build_report(rows, recipe, wall, data, cached), encoding="utf-8")
    if shortfalls and not force:
        raise Underpowered(
            "the data cannot support these artefacts (not written): "
            + "; ".join(shortfalls)
            + ". Use more --problems, or --force to write them anyway"
        )


def _ready_features(
    stem: Path, problems: list[Any], samples: int, settings: Collection, model: dict[str, str]
) -> Any:
    """The features at `stem` if they hold every trace `settings` would collect, else None.

    Every trace of `problems` x `samples`, sampled from `model` with these cues, exit phrase and
    sampling: anything else is collected and read again.
    """
    from reasoning.probes.data import DecisionPoints

    if not stem.with_name(stem.name + ".json").is_file():
        return None
    try:
        data = DecisionPoints.load(stem)
    except ReasoningError:
        return None
    wanted = {
        "model": model,
        "cues": settings.cues.to_dict(),
        "exit_phrase": settings.exit_phrase,
        "sampling": {
            "temperature": settings.temperature,
            "top_p": 0.95,
            "max_tokens": settings.max_tokens,
            "seed": settings.seed,
        },
    }
    if any(data.meta.get(key) != value for key, value in wanted.items()):
        return None
    have = {(t.get("problem_id"), t.get("sample", 0)) for t in data.meta.get("traces", [])}
    expected = {(p.id, k) for p in problems for k in range(samples)}
    fresh = all("question_sha" in t and "answer" in t for t in data.meta.get("traces", []))
    return data if have == expected and fresh and data.final_features is not None else None


def _quality_table(rows: list[tuple[str, Any, Path]]) -> None:
    """Quality of each artefact written, then its reliability on the last split measured."""
    from rich.table import Table

    table = Table(title="quality on problems not fitted on (AUROC: 95% bootstrap interval over problems)")
    for column in ("artefact", "head", "split", "problems", "examples (right)", "AUROC", "Brier", "ECE"):
        table.add_column(column)
    for kind, probe, _ in rows:
        head = "logistic" if not probe.card.hidden else "MLP " + "-".join(map(str, probe.card.hidden))
        for q in probe.card.quality:
            table.add_row(
                kind, head, q.split, str(q.problems), f"{q.examples} ({q.positives})",
                f"{q.auroc:.3f} [{q.auroc_low:.3f}, {q.auroc_high:.3f}]", f"{q.brier:.3f}", f"{q.ece:.3f}",
            )  # fmt: skip
    out.print(table)
    for kind, probe, path in rows:
        if probe.card.quality:
            q = probe.card.quality[-1]
            bins = "; ".join(
                f"p {low:.1f}-{high:.1f}: {int(count)} at {mean_p:.2f} -> {observed:.2f} right"
                for low, high, count, mean_p, observed in q.reliability
            )
            out.print(f"{kind} ({path}), reliability on {q.split}: {bins}", highlight=False)


@probe_app.command("collect-advantage")
def collect_advantage_command(
    out_path: Annotated[
        Path, typer.Option("--out", help="Output stem; writes STEM.traces.jsonl + features.")
    ],
    models: Annotated[
        list[str], typer.Option("--model", help="draft=MODEL and target=MODEL (both required).")
    ],
    dataset: Annotated[str, typer.Option(help="gsm8k, math500, a .jsonl file or gym:<task>.")] = "gsm8k",
    limit: Annotated[int, typer.Option(help="Problems to collect on.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    margin: Annotated[float, typer.Option(help="Label: target score - draft score > margin (0-9).")] = 1.0,
    follow: Annotated[
        str, typer.Option(help="Continue with the draft's step, or the oracle's pick.")
    ] = "draft",
    max_steps: Annotated[int, typer.Option(help="Most steps per trajectory.")] = 20,
    step_tokens: Annotated[int, typer.Option(help="Most tokens per step.")] = 256,
    max_tokens: Annotated[int, typer.Option(help="Token budget of a trajectory's kept steps.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of steps.")] = 0.6,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated draft layers (default L/4,L/2,3L/4,L).")
    ] = None,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    dtype: DtypeOption = DEFAULTS.dtype,
) -> None:
    """Judge paired draft/target steps from the same prefix; label and featurise the draft's."""
    from reasoning.config import EngineConfig
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.probing import model_layers, write_traces
    from reasoning.evals.router_data import AdvantageCollection, collect_advantage
    from reasoning.probes.exit import default_layers

    named = dict(m.partition("=")[::2] for m in models)
    if set(named) != {"draft", "target"} or not all(named.values()):
        raise ConfigError(f"give --model draft=MODEL --model target=MODEL, got {models}")
    settings = AdvantageCollection(
        margin=margin,
        follow=follow,  # type: ignore[arg-type]  # checked by AdvantageCollection
        max_steps=max_steps,
        step_tokens=step_tokens,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    problems = load_dataset(dataset, limit=limit, offset=offset)
    stem = _stem(out_path)
    configs = {
        name: EngineConfig(model=model, kv_cache_gb=kv_cache_gb, hidden_states=name == "draft", dtype=dtype)
        for name, model in named.items()
    }
    quiet_engine_logs(False)
    stop_on_signals()  # SIGTERM shuts the engines down too
    backends = launch_all({name: VLLMEngine(**c.engine_settings()) for name, c in configs.items()})
    chosen = [int(v) for v in layers.split(",")] if layers else None

    async def go() -> None:  # one event loop: the engines' clients are bound to it
        read = chosen or default_layers(model_layers(backends["draft"]))
        with err.status(f"collecting {len(problems)} judged trajectories ..."):
            traces, data = await collect_advantage(
                backends,
                problems,
                read,
                settings=settings,
                dataset=f"{dataset}[{offset}:{offset + limit}]",
                seed=seed,
            )
        write_traces(stem.with_name(stem.name + ".traces.jsonl"), traces)
        judged = [r for t in traces for r in t["steps"]]
        out.print(
            f"{len(traces)} trajectories, {len(judged)} paired steps, {len(data)} labelled "
            f"({int(data.labels.sum())} positive at margin {margin}); "
            f"features: {data.save(stem)} (draft layers {read})"
        )

    try:
        asyncio.run(go())
    finally:
        close(backends)


def _report(traces: list[dict[str, Any]]) -> None:
    events = [len(t["events"]) for t in traces]
    labels = [e["label"] for t in traces for e in t["events"]]
    out.print(
        f"{len(traces)} traces, {sum(t['correct'] for t in traces)} right; decision points per trace: "
        f"mean {sum(events) / max(len(events), 1):.1f}, "
        f"min {min(events, default=0)}, max {max(events, default=0)}; "
        f"safe to exit at {sum(labels)} of {len(labels)}"
    )


@probe_app.command("features")
def features_command(
    traces_path: Annotated[Path, typer.Option("--traces", help="STEM.traces.jsonl from collect.")],
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated layers (default L/4,L/2,3L/4,L).")
    ] = None,
    model: Model = None,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    dtype: DtypeOption = DEFAULTS.dtype,
    base_url: ServerOption = None,
) -> None:
    """Read hidden states at every decision point of collected traces (writes STEM.safetensors/json)."""
    from reasoning.evals.probing import compute_features, read_traces

    traces = read_traces(traces_path)
    backend = _engine(model, kv_cache_gb, True, dtype, base_url)
    try:
        chosen = [int(v) for v in layers.split(",")] if layers else None
        data = asyncio.run(compute_features(backend, traces, chosen, dataset=str(traces_path)))
    finally:
        close(backend)
    out.print(f"features: {data.save(_stem(traces_path))}  ({len(data)} decision points)")


@probe_app.command()
def train(
    data_path: Annotated[Path, typer.Option("--data", help="Features stem from collect/features.")],
    out_path: Annotated[Path, typer.Option("--out", help="Artefact stem (writes .safetensors + .json).")],
    kind: Annotated[
        str,
        typer.Option(
            help="exit (decision points), difficulty (prompts), value (steps, ends), advantage (draft steps)."
        ),
    ] = "exit",
    hidden: Annotated[str, typer.Option(help="MLP hidden sizes, comma-separated; '' = logistic.")] = "256,64",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 42,
    force: Annotated[bool, typer.Option(help="Train below the minimum counts (the card says so).")] = False,
) -> None:
    """Train a probe; reports its quality on validation problems it never saw."""
    from reasoning.probes.data import DecisionPoints
    from reasoning.probes.probe import train_probe

    if kind not in ("exit", "difficulty", "advantage", "value"):
        raise ConfigError(f"--kind must be exit, difficulty, value or advantage, got {kind!r}")
    try:
        sizes = tuple(int(v) for v in hidden.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"--hidden must be comma-separated layer sizes (e.g. 256,64; '' = logistic), got {hidden!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise ConfigError(f"--hidden sizes must be >= 1, got {hidden!r}")
    data = DecisionPoints.load(_stem(data_path))
    steps = data.meta.get("position") == "step-end" or data.advantage is not None
    if (kind == "advantage") != steps:
        made = "collect-advantage (judged draft steps)" if steps else "collect or build (decision points)"
        wanted = "collect-advantage" if kind == "advantage" else "collect"
        raise ConfigError(
            f"{data_path} was made by `reasoning probe {made}`; {_article(kind)} {kind} probe learns from "
            f"`reasoning probe {wanted}` data"
        )
    probe = train_probe(data, kind, sizes, seed=seed, force=force)  # type: ignore[arg-type]
    path = probe.save(_stem(out_path))
    out.print(f"probe: {path}  {json.dumps(probe.card.metrics)}")
    _quality_table([(kind, probe, path)])
    _warn_underpowered(probe)


@probe_app.command("calibrate")
def calibrate_command(
    probe_path: Annotated[Path, typer.Option("--probe", help="Trained probe artefact.")],
    data_path: Annotated[Path, typer.Option("--data", help="Calibration features (disjoint from training).")],
    alpha: Annotated[
        float | None, typer.Option(help="Exit probes: miscoverage, P(exit | unsafe) <= alpha per point.")
    ] = None,
    escalate_rate: Annotated[
        float, typer.Option(help="Advantage routers: fraction of held-out steps to escalate.")
    ] = 0.3,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Output stem (default: overwrite --probe).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Strict quantile (+inf when too few points).")] = True,
    force: Annotated[
        bool, typer.Option(help="Calibrate below the minimum counts (the card says so).")
    ] = False,
) -> None:
    """Calibrate an exit rule (alpha) or a router's escalation threshold (escalate rate)."""
    from reasoning.probes.advantage import calibrate_router
    from reasoning.probes.data import DecisionPoints
    from reasoning.probes.probe import Probe, calibrate

    probe = Probe.load(_stem(probe_path))
    data = DecisionPoints.load(_stem(data_path))
    if probe.card.kind == "advantage":
        router = calibrate_router(probe, data, escalate_rate)
        r = router.card.router
        if r is None:  # calibrate_router always sets it
            raise ConfigError(f"calibrating {probe_path} produced no threshold")
        out.print(
            f"calibrated: {router.save(_stem(out_path or probe_path))}  tau={r.threshold:.4f} escalates "
            f"{r.calibration_escalation_rate:.3f} of {r.steps} steps; spearman(y_hat, advantage)="
            f"{r.spearman:.3f} auroc={r.auroc:.3f}; mean advantage escalated "
            f"{r.mean_advantage_escalated:.2f} (oracle {r.mean_advantage_oracle:.2f}, "
            f"random {r.mean_advantage_all:.2f})"
        )
        return
    if probe.card.kind == "value":
        raise ConfigError(
            f"{probe_path} is a value model: it needs no conformal rule (only its probability is used), "
            "and its Platt scaling is fitted when it is trained (on the early-stopping problems)"
        )
    if probe.card.kind == "difficulty":
        raise ConfigError(
            f"{probe_path} is a difficulty probe: it needs no calibration (`difficulty -p threshold=...` "
            "sets where routes split)"
        )
    if alpha is None:
        raise ConfigError(f"{probe_path} is a {probe.card.kind} probe: give --alpha")
    calibrated = calibrate(probe, data, alpha, strict, force=force)
    path = calibrated.save(_stem(out_path or probe_path))
    c = calibrated.card.calibration
    if c is None:  # calibrate() always sets it
        raise ConfigError(f"calibrating {probe_path} produced no exit rule")
    out.print(
        f"calibrated: {path}  alpha={alpha} threshold={c.exit_threshold:.4f} "
        f"(n_pos={c.n_pos}, n_neg={c.n_neg}); calibration exit rate on unsafe points "
        f"{c.calibration_exit_rate_unsafe:.3f}, on safe points {c.calibration_exit_rate_safe:.3f}"
    )
    out.print(f"guarantee: {c.guarantee}")
    _quality_table([("exit", calibrated, path)])
    _warn_underpowered(calibrated)


def _warn_underpowered(probe: Any) -> None:
    if probe.card.underpowered:
        err.print(
            "[bold red]warning:[/] made below the minimum counts (--force): "
            + "; ".join(probe.card.underpowered)
        )


@probe_app.command("atts-calibrate")
def atts_calibrate(
    out_path: Annotated[Path, typer.Option("--out", help="Calibration artefact to write (JSON).")],
    model: Annotated[
        list[str] | None,
        typer.Option(help="The pair, as draft=MODEL and target=MODEL (embedded name, HF folder or id)."),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(help="Servers instead of engines: draft=URL and target=URL (vLLM servers)."),
    ] = None,
    dataset: Annotated[str, typer.Option(help="gsm8k, math500, a .jsonl file or gym:<task>.")] = "gsm8k",
    limit: Annotated[int, typer.Option(help="Problems to calibrate on.")] = 50,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    samples: Annotated[int, typer.Option(help="Draft first-turn chunks per problem (m).")] = 16,
    draft_tokens: Annotated[int, typer.Option(help="Most tokens per chunk (Kd; atts draft_tokens).")] = 128,
    delimiter: Annotated[
        str, typer.Option(help="Chunks stop at this delimiter (escapes such as \\n are read; '' for none).")
    ] = "\\n\\n",
    temperature: Annotated[float, typer.Option(help="Draft temperature.")] = 0.8,
    top_p: Annotated[float, typer.Option(help="Draft nucleus mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Run seed (the chunks' seeds derive from it).")] = 0,
    concurrency: Annotated[int, typer.Option(help="Problems in flight.")] = 8,
    kv_cache_gb: KvCacheOption = DEFAULTS.kv_cache_gb,
    dtype: DtypeOption = DEFAULTS.dtype,
) -> None:
    """Collect an ATTS calibration: target perplexities of the draft's first-turn chunks.

    Use the file with ``reasoning solve --strategy atts -p calibration=FILE`` and the same pair
    and chunk settings (draft_tokens, delimiter, temperature, top_p). Calibrating on the problems
    solved later is the paper's setting (and needed for ``-p coverage=conditional``).
    """
    from reasoning import Controller
    from reasoning.evals.spec import RunSpec
    from reasoning.probes.atts_calibration import ChunkSettings, collect_calibration

    chunk = ChunkSettings(draft_tokens, delimiter.encode().decode("unicode_escape"), temperature, top_p)
    kind = "openai" if base_url else "vllm"
    backends = backends_of(kind, named_values(model or [], "model"), named_values(base_url or [], "base-url"))
    if set(backends.get("backends", {})) != {"draft", "target"}:
        raise ConfigError(
            "atts-calibrate needs the pair by name: --model draft=MODEL --model target=MODEL "
            "(or --base-url draft=URL --base-url target=URL)"
        )
    settings = {"vllm": {"kv_cache_gb": kv_cache_gb, "dtype": dtype}}
    named = {name: with_settings(b, settings) for name, b in backends["backends"].items()}
    source = f"{dataset}[{offset}:{offset + limit}]"
    spec = RunSpec.model_validate(
        {"backends": named, "seed": seed, "dataset": {"name": dataset, "limit": limit, "offset": offset}}
    )
    problems = spec.problems()
    quiet_engine_logs(False)
    stop_on_signals()  # SIGTERM shuts the engines down too
    engine = launch_all(spec.named())

    async def go() -> tuple[Any, list[Any]]:  # one event loop: the engines' clients are bound to it
        try:
            with err.status(f"calibrating on {len(problems)} problems x {samples} chunks ..."):
                return await collect_calibration(
                    Controller(engine, seed=seed), problems, chunk, samples, concurrency, source
                )
        finally:
            for backend in engine.values():
                aclose = getattr(backend, "aclose", None)
                if aclose is not None:
                    await aclose()

    try:
        calibration, runs = asyncio.run(go())
    finally:
        close(engine)
    path = calibration.save(out_path)
    pooled = calibration.pooled()
    used = {
        role: {key: sum(r.usage_by_backend[role][key] for r in runs) for key in ("calls", "output_tokens")}
        for role in ("draft", "target")
    }
    out.print(
        f"calibration: {path}  ({len(pooled)} chunks of {len(calibration.scores)} problems; "
        f"PPL median {float(np.median(pooled)):.3f}, 60th percentile {float(np.quantile(pooled, 0.6)):.3f})"
    )
    out.print(f"cost: {json.dumps(used)}")


def _finite_or(value: float, default: float = -math.inf) -> float:
    """`value`, or `default` when it is NaN (a head with no defined AUROC never wins)."""
    return value if math.isfinite(value) else default


def _build_report(
    rows: list[tuple[str, Any, Path]], recipe: str, wall: float, data: Any, cached: Path | None = None
) -> str:
    """BUILD.md: how the artefacts in a folder were made and how good they are.

    `cached`: the stem of traces and features collected before, which this build only trained on.
    """
    spent = (
        f"training only: the traces and hidden states were read from {cached}, collected before"
        if cached is not None
        else "collection, hidden-state reads and training"
    )
    lines = [
        "# How these artefacts were made",
        "",
        f"    {recipe}",
        "",
        f"Wall time {wall / 60:.0f} min ({spent}) on "
        f"{data.traces} traces of {len({t['problem_id'] for t in data.meta.get('traces', [])})} problems "
        f"({data.meta.get('dataset', '')}); {len(data)} decision points, layers {data.meta.get('layers')}.",
        "",
        "| artefact | head | split | problems | examples (right) | AUROC [95% CI] | Brier | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, probe, _ in rows:
        head = "logistic" if not probe.card.hidden else "MLP " + "-".join(map(str, probe.card.hidden))
        for q in probe.card.quality:
            lines.append(
                f"| {kind} | {head} | {q.split} | {q.problems} | {q.examples} ({q.positives}) | "
                f"{q.auroc:.3f} [{q.auroc_low:.3f}, {q.auroc_high:.3f}] | {q.brier:.3f} | {q.ece:.3f} |"
            )
    for kind, probe, _ in rows:
        c = probe.card.calibration
        if kind == "exit" and c is not None:
            lines += [
                "",
                f"Exit rule: alpha {c.alpha}, threshold {c.exit_threshold:.4f} on {c.n_pos} safe and "
                f"{c.n_neg} unsafe held-out decision points; it exits at "
                f"{c.calibration_exit_rate_unsafe:.3f} of the unsafe and "
                f"{c.calibration_exit_rate_safe:.3f} of the safe ones.",
            ]
        picked = probe.card.training.get("selection_held_out") if kind == "value" else None
        if picked:
            lines += [
                "",
                f"The value model as the selector among each held-out problem's own traces "
                f"({int(picked['problems'])} problems): majority vote {picked['majority']:.3f}, "
                f"value-weighted vote {picked['value_weighted']:.3f}, "
                f"value argmax {picked['value_argmax']:.3f}, pass@k {picked['pass_at_k']:.3f}.",
            ]
        scaling = probe.card.platt if kind == "value" else None
        if scaling is not None:
            lines += [
                "",
                f"Platt scaling of the value model: P(right) = sigmoid({scaling.a:.4f} * logit "
                f"{'+' if scaling.b >= 0 else '-'} {abs(scaling.b):.4f}), fitted on the "
                + (f"{len(scaling.problem_ids)} " if scaling.problem_ids else "")
                + "early-stopping problems of training "
                f"({scaling.examples} examples, {scaling.positives} right; the weights were never fitted "
                f"on them: they only chose the epoch); log loss there {scaling.log_loss_head:.3f} -> "
                f"{scaling.log_loss_scaled:.3f}. "
                "It is strictly increasing: AUROC and the value argmax are the head's own.",
            ]
            alone = probe.card.training.get("unscaled_held_out")
            if alone:
                before = alone.get("selection", {})
                lines += [
                    "",
                    f"The head alone (unscaled) on held-out: Brier {alone['brier']:.3f}, ECE "
                    f"{alone['ece']:.3f}"
                    + (f"; value-weighted vote {before['value_weighted']:.3f}" if before else "")
                    + ". Its reliability (predicted -> observed, examples):",
                    "",
                ]
                lines += [
                    f"- p {low:.1f}-{high:.1f}: {mean_p:.2f} -> {observed:.2f} ({int(count)})"
                    for low, high, count, mean_p, observed in alone.get("reliability", [])
                ]
        if probe.card.quality and probe.card.quality[-1].reliability:
            q = probe.card.quality[-1]
            lines += ["", f"Reliability of {kind} on {q.split} (predicted -> observed, examples):", ""]
            lines += [
                f"- p {low:.1f}-{high:.1f}: {mean_p:.2f} -> {observed:.2f} ({int(count)})"
                for low, high, count, mean_p, observed in q.reliability
            ]
    return "\n".join(lines) + "\n"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
