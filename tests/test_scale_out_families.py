"""Every strategy family on a pool of engine replicas (`reasoning.backends.replicas`, ``--ray``).

Probe-governed strategies (early exit, lt-select, value-scored best-of-n), a PRM-scored beam
search and prompt scoring run on scripted replicas of a local Ray cluster: their answers and
scores equal an in-process run's, a problem's reads go to the replica that holds its prefix, and
what comes back from a replica is a probe's output, not hidden states (the replicas' own counts:
heads received once, no raw hidden-state read). The engine test runs one real engine replica
with hidden states on. Assertions are on mechanisms, never on timings or the model's answers.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import replica_pool

from reasoning import Controller, Problem, Request, Run, ScriptedBackend
from reasoning.backends.scripted import tokenize
from reasoning.engine.models import fingerprint
from reasoning.errors import CapabilityError
from reasoning.evals.run import solve
from reasoning.probes.conformal import GUARANTEE
from reasoning.probes.exit import EXIT_PHRASE
from reasoning.probes.probe import Probe, ProbeCard
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.best_of_n import BestOfN
from reasoning.strategies.early_exit import EarlyExit
from reasoning.strategies.lt_select import LTSelect

ray = pytest.importorskip("ray")

from reasoning.backends import replica_server  # noqa: E402  (after the skip: the pool needs Ray)
from reasoning.backends.replicas import ReplicaPool, replica_spec, start_replicas  # noqa: E402

pytestmark = pytest.mark.ray

SCRIPTED = fingerprint("scripted")
HIDDEN = 4
LAYERS = [1, 2]
PROBLEMS = [Problem(id=f"p{i}", question=f"What is {i} plus {i}?", answer=str(2 * i)) for i in range(6)]


def doubled(request: Request) -> int:
    return 2 * int(request.messages[-1].content.split("What is ")[1].split(" ")[0])


@pytest.fixture
def cluster(ray_cluster: object) -> None:
    """The session's local Ray cluster (`ray_cluster` in conftest.py, 2 CPUs)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scripts below, by value


def pool_of(*specs: Any, **options: Any) -> ReplicaPool:
    return start_replicas(list(specs), **options)


def served(run: Run) -> list[str]:
    return list(run.engine["replica_requests"])


def per_replica(runs: Sequence[Run], what: Any) -> Counter[str]:
    """`what(run)` summed over each replica's problems (affinity: one replica per problem)."""
    out = Counter[str]()
    for run in runs:
        out[run.engine["replica"]] += what(run)
    return out


def probe(tmp_path: Path, kind: str, calibrated: bool) -> str:
    """A logistic probe on feature 0 of the states (P = sigmoid(10 x - 5)), made for 'scripted'."""
    width = HIDDEN * len(LAYERS)
    w = np.zeros((1, width), dtype=np.float32)
    w[0, 0] = 10.0
    calibration = {
        "alpha": 0.1,
        "q_pos": 0.2,
        "q_neg": 0.5,
        "n_pos": 50,
        "n_neg": 50,
        "strict": True,
        "guarantee": GUARANTEE,
        "exit_threshold": 0.8,
        "calibration_exit_rate_unsafe": 0.0,
        "calibration_exit_rate_safe": 1.0,
    }
    card = ProbeCard(
        kind=kind,  # type: ignore[arg-type]
        model={"name": SCRIPTED.name, "sha256": SCRIPTED.sha256},
        layers=LAYERS,
        hidden_size=HIDDEN,
        position="decision-point",
        cues={"words": [], "step_boundary": True, "every": 0, "skip_first": 0, "max_events": None},
        exit_phrase=EXIT_PHRASE,
        hidden=[],
        training_data_sha256="0" * 64,
        calibration=calibration if calibrated else None,
    )
    arrays = {"mean": np.zeros(width), "scale": np.ones(width), "w0": w, "b0": np.array([-5.0])}
    return str(Probe(card, arrays).save(tmp_path / kind))


# -- scripted worlds -------------------------------------------------------------------------------


def marked(request: Request, layers: Sequence[int], positions: Sequence[int]) -> np.ndarray:
    """Feature 0 is 1 at positions after the word DONE (or 'good'), causally; [positions, layers, 4]."""
    words = tokenize(
        "".join(f"<{m.role}> {m.content}\n" for m in request.messages) + "<assistant> " + request.prefix
    )
    rows = []
    for position in positions:
        seen = "".join(words[: (position % len(words)) + 1])
        rows.append(
            [1.0 if "DONE" in seen or "good" in seen.split("<assistant>")[-1] else 0.0, 0.5, 0.0, 1.0]
        )
    return np.tile(np.asarray(rows, dtype=np.float32)[:, None, :], (1, len(layers), 1))


def exiting(request: Request, number: int) -> str:
    """A trace of three steps that knows its answer after the second; the forced answer after it."""
    if request.prefix.endswith(EXIT_PHRASE):
        return f"{doubled(request)}}} and more" if "DONE" in request.prefix else "0} and more"
    right = doubled(request)
    return f"Let us add.\n\nIt is {right} DONE so\n\nchecking again\n\nThe answer is \\boxed{{{right}}}"


def walked(request: Request, layers: Sequence[int], positions: Sequence[int]) -> np.ndarray:
    """A word ``x,y`` moves the state to (x, y) times the layer, [positions, layers, 2]."""
    path, where = [], (0.0, 0.0)
    for word in request.prefix.split():
        x, comma, y = word.partition(",")
        if comma:
            where = (float(x), float(y))
        path.append(where)
    out = np.zeros((len(positions), len(layers), 2))
    for i, position in enumerate(positions):
        if -len(path) <= position < len(path):
            out[i] = np.outer(layers, path[position])
    return out


def direct_or_wandering(request: Request, number: int) -> str:
    """Even samples walk straight to the right answer; odd ones wander to a wrong one."""
    right = doubled(request)
    if number % 2 == 0:
        steps = [f"{i},0" for i in range(1, 33)]
        return " ".join([*steps, f"\\boxed{{{right}}}"])
    steps = [f"{i / 2},{10 if (i - 1) // 8 % 2 == 0 else -10}" for i in range(1, 33)]
    return " ".join([*steps, f"\\boxed{{{right + 1}}}"])


def one_good_of_three(request: Request, number: int) -> str:
    right = doubled(request)
    return f"good \\boxed{{{right}}}" if number % 3 == 2 else f"bad \\boxed{{{right + 1}}}"


def good_or_bad_steps(request: Request, number: int) -> str:
    """Step-wise: odd samples write good steps (and the right answer), even ones bad steps."""
    word = "good" if number % 2 else "bad"
    right = doubled(request)
    if request.prefix.count("\n\n") >= 2:
        return f"{word} so \\boxed{{{right if word == 'good' else right + 1}}}"
    return f"{word} step\n\nmore"


def step_rewards(request: Request) -> list[float]:
    """The scripted PRM: 0.9 for a good step, 0.1 for a bad one."""
    steps = request.messages[-1].content.split("<extra_0>")[:-1]
    return [0.9 if step.strip().startswith("good") else 0.1 for step in steps]


def prm() -> ScriptedBackend:
    return ScriptedBackend(["unused"], name="prm", model="scripted-prm", rewards=step_rewards)


def scripted(script: Any, **options: Any) -> partial[ScriptedBackend]:
    return partial(ScriptedBackend, script, **options)


# -- probe-governed strategies --------------------------------------------------------------------


async def test_early_exit_on_a_pool_ships_the_probe_once_and_gets_back_only_probabilities(
    cluster: None, tmp_path: Path
) -> None:
    strategy = EarlyExit(probe=probe(tmp_path, "exit", calibrated=True), n=2)
    local = await solve(PROBLEMS, Controller(ScriptedBackend(exiting, hidden_states=marked)), strategy)
    pool = pool_of(*[scripted(exiting, hidden_states=marked, seconds_per_token=0.002)] * 2)
    try:
        runs = await solve(PROBLEMS, Controller(pool), strategy)
        counts = pool.counts()
    finally:
        pool.close()
    assert all(r.error is None and r.correct for r in runs)
    assert [r.answer for r in runs] == [r.answer for r in local]
    keys = ("exit_token", "decision_points", "probe")
    for run, alone in zip(runs, local, strict=True):
        assert [{k: c.scores[k] for k in keys} for c in run.candidates] == [
            {k: c.scores[k] for k in keys} for c in alone.candidates
        ]
        assert all(c.finish_reason == "exit" for c in run.candidates)
        assert served(run) == [run.engine["replica"]]  # its tokens, reads and forced answers: one replica
    points = per_replica(runs, lambda r: sum(int(c.scores["decision_points"]) for c in r.candidates))
    assert len(points) == 2  # both replicas served problems
    for name, replica in counts.items():
        assert replica["mapped_hidden_states"] == points[name]  # every probe read on the problem's replica
        assert replica["heads"] == 1  # the probe crossed once
        assert replica.get("hidden_states", 0) == 0  # no hidden state crossed


async def test_lt_select_on_a_pool_reads_signals_not_states(cluster: None) -> None:
    strategy = LTSelect(n=4, segment=8, layers=(1, 2))
    local = await solve(
        PROBLEMS, Controller(ScriptedBackend(direct_or_wandering, hidden_states=walked)), strategy
    )
    pool = pool_of(*[scripted(direct_or_wandering, hidden_states=walked)] * 2)
    try:
        runs = await solve(PROBLEMS, Controller(pool), strategy)
        counts = pool.counts()
    finally:
        pool.close()
    assert all(r.error is None and r.correct for r in runs)  # the straight trace is chosen
    for run, alone in zip(runs, local, strict=True):
        confidences = sorted(c.scores["lt_confidence"] for c in run.candidates)
        assert confidences == pytest.approx(sorted(c.scores["lt_confidence"] for c in alone.candidates))
        assert run.usage["output_tokens"] == alone.usage["output_tokens"]  # reads metered alike
    reads = per_replica(runs, lambda r: len(r.candidates))
    assert {name: c["mapped_hidden_states"] for name, c in counts.items()} == dict(reads)
    assert all(c["heads"] == 1 and c.get("hidden_states", 0) == 0 for c in counts.values())


async def test_value_scored_best_of_n_on_a_pool(cluster: None, tmp_path: Path) -> None:
    strategy = BestOfN(
        n=3, score="value", selector="weighted", probe=probe(tmp_path, "value", calibrated=False)
    )
    local = await solve(
        PROBLEMS, Controller(ScriptedBackend(one_good_of_three, hidden_states=marked)), strategy
    )
    pool = pool_of(*[scripted(one_good_of_three, hidden_states=marked)] * 2)
    try:
        runs = await solve(PROBLEMS, Controller(pool), strategy)
        counts = pool.counts()
    finally:
        pool.close()
    assert all(r.error is None and r.correct for r in runs)  # the one good sample outweighs two bad
    for run, alone in zip(runs, local, strict=True):
        values = sorted(c.scores["value"] for c in run.candidates)
        assert values == pytest.approx(sorted(c.scores["value"] for c in alone.candidates))
    assert sum(c["mapped_hidden_states"] for c in counts.values()) == 3 * len(PROBLEMS)
    assert all(c.get("hidden_states", 0) == 0 for c in counts.values())


# -- process reward models --------------------------------------------------------------------------


async def test_a_prm_scored_beam_search_on_a_pool_scores_on_each_problems_replica(cluster: None) -> None:
    strategy = BeamSearch(n=4, width=2, scorer="prm")
    local_prm = prm()
    alone = await solve(
        PROBLEMS, Controller({"policy": ScriptedBackend(good_or_bad_steps), "prm": local_prm}), strategy
    )
    pool = pool_of(scripted(good_or_bad_steps), scripted(good_or_bad_steps), named={"prm": prm})
    try:
        runs = await solve(PROBLEMS, Controller({"policy": pool, "prm": pool.serving("prm")}), strategy)
        counts = pool.counts()
    finally:
        pool.close()
    assert all(r.error is None and r.correct for r in runs)  # the PRM's scores steered every search
    assert all(r.correct for r in alone)
    for run in runs:
        assert run.engines["prm"]["replica"] == run.engine["replica"]  # the PRM beside its policy
        assert served(run) == [run.engine["replica"]]
    # Each PRM read's prompt tokens are charged as in process (counted on the replica, in the call).
    assert [r.usage["calls"] for r in runs] == [r.usage["calls"] for r in alone]
    assert [r.usage["prompt_tokens"] for r in runs] == [r.usage["prompt_tokens"] for r in alone]
    assert sum(c["step_rewards"] for c in counts.values()) == len(local_prm.reward_requests)
    assert all(c["step_rewards"] for c in counts.values())  # both replicas' PRMs served


async def test_prompt_scoring_and_a_missing_ability_cross_the_pool_as_themselves(cluster: None) -> None:
    logprob = lambda request, position, token: -0.01 * position  # noqa: E731
    request = Request(Controller(ScriptedBackend(["x"])).prompt(PROBLEMS[1]), prefix="so far")
    expected = await ScriptedBackend(["x"], prompt_logprob=logprob).prompt_logprobs(request)
    pool = pool_of(scripted(["x"], prompt_logprob=logprob))
    try:
        view: Any = pool.for_problem("p1")
        assert await view.prompt_logprobs(request) == expected
        with pytest.raises(CapabilityError, match="hidden states") as caught:
            await view.hidden_states(request, [1])
        assert caught.value.capability.startswith("hidden states")  # the replica's own error
        with pytest.raises(CapabilityError, match="process rewards"):
            await view.step_rewards(request)
    finally:
        pool.close()


async def test_a_head_a_replica_dropped_is_sent_again(cluster: None) -> None:
    request = Request(Controller(ScriptedBackend(["x"])).prompt(PROBLEMS[1]))
    pool = pool_of(scripted(["x"], hidden_states=marked))
    try:
        view: Any = pool.for_problem("p1")
        heads = [partial(np.multiply, float(k + 1)) for k in range(replica_server.HEADS_KEPT + 1)]
        first = await view.mapped_hidden_states(request, LAYERS, [-1], heads[0])
        assert (await view.mapped_hidden_states(request, LAYERS, [-1], heads[0]) == first).all()
        assert pool.counts()["replica-0"]["heads"] == 1  # sent once
        for head in heads[1:]:  # the replica keeps HEADS_KEPT: the first is dropped there
            await view.mapped_hidden_states(request, LAYERS, [-1], head)
        again = await view.mapped_hidden_states(request, LAYERS, [-1], heads[0])
        counts = pool.counts()["replica-0"]
    finally:
        pool.close()
    assert (again == first).all() and first.shape == (1, len(LAYERS), HIDDEN)
    assert counts["heads"] == len(heads) + 1 and counts.get("hidden_states", 0) == 0


# -- the refusal is gone ----------------------------------------------------------------------------


def test_runs_that_read_hidden_states_or_use_a_prm_are_accepted_on_ray() -> None:
    from reasoning.backends.specs import VLLMEngine
    from reasoning.evals.spec import RunSpec

    assert replica_spec(VLLMEngine(), hidden_states=True).hidden_states  # type: ignore[union-attr]
    assert not replica_spec(VLLMEngine()).hidden_states  # type: ignore[union-attr]  # only when needed
    spec = RunSpec(question="q", ray="auto", prm="Qwen/Qwen2.5-Math-PRM-7B", strategy="lt-select")
    assert spec.ray == "auto" and spec.prm is not None


# -- one engine replica ------------------------------------------------------------------------------


@pytest.mark.engine
async def test_one_engine_replica_serves_probe_strategies(cluster: None, engine_replica: object) -> None:
    """A real engine replica (the embedded 0.5B, 1 GiB KV cache, hidden states on): lt-select and
    the shipped value model's best-of-n read their scores on the replica; no hidden state returns.

    The engine replica is the session's (`engine_replica` in conftest.py, shared with
    test_scale_out): its counts are cumulative, so this test reads what they grew by.
    """
    problems = [Problem(id="t", question="Tom has 3 apples and buys 4 more. How many apples?", answer="7")]
    with replica_pool(engine_replica) as pool:
        assert pool.model == "qwen2.5-coder-0.5b-instruct"
        before = pool.counts()["replica-0"]
        lt = await solve(problems, Controller(pool), LTSelect(n=2, max_tokens=48, segment=8))
        value = await solve(problems, Controller(pool), BestOfN(n=2, score="value", max_tokens=24))
        counts = {k: v - before.get(k, 0) for k, v in pool.counts()["replica-0"].items()}
    assert all(r.error is None for r in lt + value)
    assert all("lt_segments" in c.scores for c in lt[0].candidates)
    assert all(0 <= c.scores["value"] <= 1 for c in value[0].candidates)
    assert counts["mapped_hidden_states"] == 4 and counts.get("hidden_states", 0) == 0
    assert counts["heads"] == 2  # the trajectory head and the value model, once each
