"""The artefacts a run's strategies read, checked before any engine starts.

Probes (early exit, difficulty, advantage routers, value models of step searches, best-of-n and
self-eval) and ATTS calibrations are read as the strategies will read them (missing, truncated,
the wrong kind, uncalibrated, made for another model), and an artefact fitted on any of the
problems to be evaluated is refused: one error before compute instead of the same error row per
problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reasoning import STRATEGIES, Problem
from reasoning.compose import build
from reasoning.errors import ConfigError

if TYPE_CHECKING:
    from reasoning.probes.probe import Kind

__all__ = ["artefact_hashes", "artefacts_read", "check_artefacts", "strategy_tree"]


def artefacts_read(strategy: Any, models: Mapping[str, str | None]) -> list[tuple[str, str, str, Kind, bool]]:
    """What `strategy` (nested ones included) reads: (strategy name, path, model, kind, calibrated).

    An empty path is the artefact shipped for the model. ATTS calibrations are not listed
    (`check_artefacts` reads them itself).
    """
    from reasoning.probes.atts_calibration import DRAFT
    from reasoning.strategies import Arbitrage, BestOfN, DifficultyRouter, EarlyExit, SelfEval
    from reasoning.strategies.step_search import StepSearch

    default = str(next(iter(models.values()), None) or "")
    wanted: list[tuple[str, str, str, Kind, bool]] = []
    for node in strategy_tree(strategy):
        name = STRATEGIES.name_of(node)
        if isinstance(node, EarlyExit):
            wanted.append((name, node.probe, default, "exit", True))
        elif isinstance(node, DifficultyRouter):
            wanted.append((name, node.probe, default, "difficulty", True))
        elif isinstance(node, Arbitrage) and node.router == "probe" and models.get(DRAFT):
            wanted.append((name, node.probe, str(models[DRAFT]), "advantage", node.tau is None))
        elif isinstance(node, StepSearch) and node.scorer == "probe" and node.probe:
            wanted.append((name, node.probe, default, "exit", False))
        elif isinstance(node, StepSearch) and node.scorer == "value":
            wanted.append((name, node.probe or "", default, "value", False))
        elif isinstance(node, BestOfN | SelfEval) and node.needs_hidden_states:
            wanted.append((name, node.probe, default, "value", False))
    return wanted


def artefact_hashes(strategy: Any, models: Mapping[str, str | None]) -> dict[str, str]:
    """sha256 of each artefact card `strategy` reads, by kind and path (a rebuilt one differs).

    Artefacts that cannot be resolved are left out (`check_artefacts` reports them).
    """
    from reasoning.probes.data import file_sha256
    from reasoning.probes.probe import resolve

    hashes = {}
    for _, path, model, kind, _ in artefacts_read(strategy, models):
        if not model:
            continue
        try:
            hashes[f"{kind}:{path or 'shipped'}"] = file_sha256(resolve(path, model, kind))
        except ConfigError:
            continue
    return hashes


def check_artefacts(
    strategies: Sequence[Any], models: Mapping[str, str | None], problems: Sequence[Problem] = ()
) -> list[str]:
    """Load every artefact `strategies` read (nested ones included) for the run's `models`.

    A model is named as `RunSpec.models` names it (the first is the default backend). A
    strategy whose named backends the run lacks is left to say so itself. Returns warnings to
    show: artefacts made below the minimum counts (``--force``).

    Raises:
        ConfigError: An artefact is unusable (the message names the file and the strategy).
        ArtefactOverlap: An artefact was fitted on some of `problems`.
    """
    from reasoning.probes.atts_calibration import DRAFT, TARGET, load_calibration
    from reasoning.probes.probe import load_probe, refuse_overlap, resolve
    from reasoning.strategies import ATTS

    warnings: list[str] = []
    for strategy in strategies:
        for node in strategy_tree(strategy):
            if isinstance(node, ATTS) and models.get(DRAFT) and models.get(TARGET):
                try:
                    load_calibration(node.calibration, str(models[DRAFT]), str(models[TARGET]), node.chunks())
                except ConfigError as exc:
                    raise type(exc)(f"strategy {STRATEGIES.name_of(node)}: {exc}") from None
        for name, path, model, kind, calibrated in artefacts_read(strategy, models):
            if not model:  # a server naming its model itself: checked when it is read
                continue
            try:
                probe = load_probe(path, model, kind, calibrated=calibrated)
                file = resolve(path, model, kind)
                if problems:
                    refuse_overlap(file, probe.card.fitted_on, problems)
            except ConfigError as exc:
                raise type(exc)(f"strategy {name}: {exc}") from None
            if probe.card.underpowered:
                warnings.append(
                    f"strategy {name} reads {file}, made below the minimum counts (--force): "
                    + "; ".join(probe.card.underpowered)
                )
    return sorted(set(warnings))


def strategy_tree(strategy: Any) -> list[Any]:
    """`strategy` and every strategy nested in it (inner steps, a router's routes)."""
    from reasoning.strategies import DifficultyRouter

    nodes, todo = [], [strategy]
    while todo:
        node = todo.pop(0)
        nodes.append(node)
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            continue
        for f in dataclasses.fields(node):
            value = getattr(node, f.name, None)
            if (
                dataclasses.is_dataclass(value)
                and not isinstance(value, type)
                and STRATEGIES.holds(type(value))
            ):
                todo.append(value)
        if isinstance(node, DifficultyRouter):
            todo += [build(node.easy), build(node.hard)]
    return nodes
