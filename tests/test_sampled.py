"""Sampling declared once (`Sampled`), the `Result` helpers, and candidates as plain dataclasses."""

import dataclasses
import json

import pytest

import reasoning.strategies
from reasoning import STRATEGIES, Candidate, ConfigError, Controller, Problem, Result, Run, ScriptedBackend
from reasoning.strategies import Sampled

# (temperature, top_p, max_tokens) of every strategy that samples whole solutions, as they were
# when each strategy declared its own three fields: the defaults are part of the public surface.
DEFAULTS = {
    "adaptive-sc": (0.7, 0.95, 512),
    "best-of-n": (0.7, 0.95, 512),
    "budget-forcing": (0.6, 0.95, 512),
    "deepconf": (0.6, 0.95, 512),
    "dynasor": (0.6, 0.95, 512),
    "early-exit": (0.6, 0.95, 512),
    "first-finish": (0.6, 0.95, 512),
    "genrm": (0.7, 0.95, 512),
    "longest-finish": (0.6, 0.95, 512),
    "lt-prune": (0.6, 0.95, 512),
    "lt-select": (0.6, 0.95, 512),
    "pdr": (0.6, 0.95, 512),
    "self-consistency": (0.7, 0.95, 512),
    "self-eval": (0.7, 0.95, 512),
    "self-refine": (0.6, 0.95, 512),
    "short-m@k": (0.6, 0.95, 512),
    "single": (0.0, 1.0, 512),
    "solve-detect-verify": (0.6, 0.95, 512),
    "sr": (0.6, 0.95, 512),
    "trimr": (0.6, 0.95, 512),
}
REQUIRED = {"early-exit": {"probe": "x.json"}}
SAMPLING = ("temperature", "top_p", "max_tokens")


def test_the_sampling_strategies_are_the_sampled_ones() -> None:
    sampled = {n for n in STRATEGIES.names() if issubclass(STRATEGIES.get(n), Sampled)}
    assert sampled == set(DEFAULTS)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_sampling_parameters_keep_their_names_defaults_and_docs(name: str) -> None:
    parameters = {p.name: p for p in STRATEGIES.parameters(name)}
    assert tuple(parameters[f].default for f in SAMPLING) == DEFAULTS[name]
    assert all(parameters[f].doc for f in SAMPLING)
    assert [p.name for p in STRATEGIES.parameters(name)][-2:] == ["top_p", "max_tokens"]
    strategy = STRATEGIES.create(name, {**REQUIRED.get(name, {}), "temperature": "0.3", "max_tokens": "300"})
    assert (strategy.temperature, strategy.max_tokens) == (0.3, 300)
    sampling = strategy.sampling(2, logprobs=20)
    top_p = DEFAULTS[name][1]
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.n) == (0.3, top_p, 300, 2)
    assert sampling.logprobs == 20
    with pytest.raises(ConfigError, match="top_p must be in"):
        STRATEGIES.create(name, {**REQUIRED.get(name, {}), "top_p": "0"})


@pytest.mark.parametrize(
    ("name", "params", "n"),
    [
        ("single", {}, 1),
        ("self-consistency", {"n": "3"}, 3),
        ("best-of-n", {"n": "2", "selector": "majority"}, 2),
        ("first-finish", {"n": "3"}, 3),
        ("short-m@k", {"k": "3", "m": "2"}, 3),
        ("longest-finish", {"n": "2"}, 2),
        ("adaptive-sc", {"max_samples": "2", "batch": "2"}, 2),
        ("deepconf", {"mode": "offline", "budget": "2"}, 2),
    ],
)
def test_requests_carry_the_declared_sampling(name: str, params: dict[str, str], n: int) -> None:
    backend = ScriptedBackend(["\\boxed{4}"])
    strategy = STRATEGIES.create(name, {**params, "temperature": "0.25", "top_p": "0.5", "max_tokens": "16"})
    run = Controller(backend).run_sync(Problem("p", "2+2?"), strategy)
    sampling = backend.requests[0].sampling
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.n) == (0.25, 0.5, 16, n)
    assert run.answer == "4"
    assert {k: run.params[k] for k in SAMPLING} == {"temperature": 0.25, "top_p": 0.5, "max_tokens": 16}


def test_strategies_take_keywords_only() -> None:
    with pytest.raises(TypeError):
        reasoning.strategies.SelfConsistency(3)  # type: ignore[misc]


def test_a_strategys_own_parameters_come_first() -> None:
    own = ["n", "temperature", "inner"]  # inner: the composed form's strategy
    assert [p.name for p in STRATEGIES.parameters("self-consistency")] == [*own, "top_p", "max_tokens"]
    assert [p.name for p in STRATEGIES.parameters("beam")][:4] == ["n", "width", "reject_at", "selector"]
    # An unset inner step is not recorded: records keep the identity they had before composition.
    assert list(reasoning.registry.params_of(reasoning.strategies.SelfConsistency())) == ["n", *SAMPLING]


def candidates(*answers: str | None, lengths: tuple[int, ...] = ()) -> list[Candidate]:
    lengths = lengths or (1,) * len(answers)
    return [
        Candidate(f"t{i}", a, output_tokens=n) for i, (a, n) in enumerate(zip(answers, lengths, strict=True))
    ]


def test_result_vote() -> None:
    pool = candidates("3", None, "4", "4", "3", lengths=(9, 1, 5, 2, 1))
    assert (Result.vote(pool).answer, Result.vote(pool).chosen) == ("3", 0)  # a tie: seen first
    assert Result.vote(pool, tie="shortest").chosen == 4
    assert Result.vote(pool, tie="longest").chosen == 0
    assert Result.vote(pool, weights=[1, 9, 1, 1, 1]).answer == "3"  # no answer, no vote
    assert Result.vote(pool, voters={2, 3, 4}).chosen == 2
    assert Result.vote(pool).candidates == tuple(pool)
    assert Result.vote(candidates(None, None)) == Result(None, tuple(candidates(None, None)), None)


def test_result_pick() -> None:
    pool = candidates("3", "4")
    assert Result.pick(pool, 1) == Result("4", tuple(pool), 1)
    assert Result.pick(pool, None) == Result(None, tuple(pool), None)


def test_candidates_are_plain_dataclasses_written_as_before() -> None:
    candidate = Candidate("x", "4", 1.0, output_tokens=3, scores={"a": 1.0})
    assert dataclasses.is_dataclass(candidate)
    assert candidate.with_scores(b=2.0).scores == {"a": 1.0, "b": 2.0} and candidate.scores == {"a": 1.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        candidate.text = "y"  # type: ignore[misc]
    # A row as the pydantic candidates wrote it: same fields, same order, reads back and writes the same.
    row = {
        "text": "x",
        "answer": "4",
        "score": 1.0,
        "output_tokens": 3,
        "finish_reason": "stop",
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "seconds": 0.0,
        "started": 0.0,
        "mean_logprob": None,
        "scores": {"a": 1.0},
        "backend": "",
    }
    run = Run(problem_id="p", candidates=[candidate])
    assert json.loads(run.model_dump_json())["candidates"] == [row]
    # A row written before `started` was recorded reads back with 0.
    old = {k: v for k, v in row.items() if k != "started"}
    assert Run.model_validate({"problem_id": "p", "candidates": [old]}).candidates[0] == candidate
    again = Run.model_validate_json(run.model_dump_json())
    assert again == run and again.candidates[0] == candidate
