"""Which named backends a strategy calls: checked before any engine starts.

`backends_needed` reads them off a built strategy (and the strategies it composes), so that
``reasoning solve``, ``reasoning leaderboard run`` and ``reasoning proxy`` refuse a strategy
whose backends the run lacks while reading their settings, with the flag or field that supplies
each, instead of failing on every problem once the engines are up.

Example:
    >>> from reasoning.compose import build
    >>> backends_needed(build("spec-reason"))
    ['draft', 'target']
    >>> backends_needed(build("beam", {"scorer": "prm"}))
    ['prm']
    >>> backends_needed(build("self-consistency", {"inner": "best-of-n(judge_backend=target)"}))
    ['target']
    >>> backends_needed(build("single"))
    []
"""

from __future__ import annotations

import dataclasses

from reasoning.compose import build
from reasoning.registry import STRATEGIES

__all__ = ["PRM_BACKEND", "backends_needed", "reward_backends_needed"]

PRM_BACKEND = "prm"
"""The backend a step search's ``scorer=prm`` calls unless ``scorer_backend`` names another
(``reasoning solve --prm`` serves the process reward model under this name)."""


def backends_needed(strategy: object) -> list[str]:
    """The named backends `strategy` and the strategies it composes call (empty: any one backend).

    The draft/target strategies (spec-reason, spec-thinking: their ``draft`` and ``target``;
    atts and arbitrage: ``draft`` and ``target``, and arbitrage's ``judge`` with the judge
    router), a step search's process scorer (``scorer=prm``: ``scorer_backend``, default
    `PRM_BACKEND`; ``scorer=judge``: ``scorer_backend`` when given), every other parameter
    ``*_backend`` that names one (best-of-n's ``judge_backend``, genrm's ``verify_backend``,
    trimr's ``solver_backend`` and ``verifier_backend``), and the routes of a difficulty router.
    """
    return list(dict.fromkeys(name for name, _ in _needed(strategy)))


def reward_backends_needed(strategy: object) -> list[str]:
    """Those of `backends_needed` that must serve a process reward model (``scorer=prm``)."""
    return list(dict.fromkeys(name for name, reward in _needed(strategy) if reward))


def _needed(strategy: object) -> list[tuple[str, bool]]:
    """Each backend `strategy` calls, and whether it is called as a process reward model."""
    from reasoning.strategies.arbitrage import DRAFT, TARGET, Arbitrage
    from reasoning.strategies.atts import ATTS
    from reasoning.strategies.difficulty import DifficultyRouter
    from reasoning.strategies.speculative_steps import Speculative
    from reasoning.strategies.step_search import StepSearch

    found: list[tuple[str, bool]] = []
    if not dataclasses.is_dataclass(strategy) or isinstance(strategy, type):
        return found
    if isinstance(strategy, Speculative):
        found += [(strategy.draft, False), (strategy.target, False)]
    elif isinstance(strategy, ATTS | Arbitrage):
        found += [(DRAFT, False), (TARGET, False)]
        if isinstance(strategy, Arbitrage) and strategy.router == "judge":
            found.append((strategy.judge, False))
    if isinstance(strategy, StepSearch):
        if strategy.scorer == "prm":
            found.append((strategy.scorer_backend or PRM_BACKEND, True))
        elif strategy.scorer == "judge" and strategy.scorer_backend:
            found.append((strategy.scorer_backend, False))
    if isinstance(strategy, DifficultyRouter):
        found += _needed(build(strategy.easy)) + _needed(build(strategy.hard))
    for f in dataclasses.fields(strategy):
        value = getattr(strategy, f.name)
        if isinstance(strategy, StepSearch) and f.name == "scorer_backend":
            continue  # read above: only the judge and the PRM call it
        if f.name.endswith("_backend") and isinstance(value, str) and value:
            found.append((value, False))
        elif dataclasses.is_dataclass(value) and STRATEGIES.holds(type(value)):
            found += _needed(value)
    return found
