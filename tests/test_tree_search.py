"""Step-level tree search on scripted backends and scripted process scores: exact search paths."""

import doctest
from collections import Counter
from unittest.mock import ANY

import numpy as np
import pytest

from reasoning import STRATEGIES, Budget, ConfigError, Context, Controller, Meter, Problem, ScriptedBackend
from reasoning.strategies import a_star, beam_search, dvts, particle_filtering, step_tree
from reasoning.strategies.a_star import AStar
from reasoning.strategies.beam_search import BeamSearch
from reasoning.strategies.dvts import DVTS
from reasoning.strategies.particle_filtering import ParticleFiltering, resample, resampling_weights
from reasoning.strategies.step_tree import is_final_step, search_stats, split_steps, step_prefix
from reasoning.verifiers import process
from reasoning.verifiers.process import GenerativeScorer, ScriptedScorer, aggregate

PROBLEM = Problem("p", "What is 6 times 7?", answer="42")


def numbered(depth: int, words: int = 0, final: frozenset[int] = frozenset()):
    """Each new step is ``s<sample number>`` (plus `words` filler words); steps at `depth` answer.

    A request that continues a cut step (its prefix does not end a step) gets the step's tail.
    """

    def script(request, number):
        done = request.prefix.count("\n\n")
        answer = f" \\boxed{{{number}}}" if done + 1 >= depth or number in final else ""
        more = "" if answer else "\n\nmore"  # the delimiter stops the step; a final step ends the text
        if request.prefix and not request.prefix.endswith("\n\n"):
            return "w" + " w" * (words - 2) + answer + more
        return f"s{number}" + " w" * words + answer + more

    return script


def by_name(table, default=0.5):
    """Scores keyed by the newest step's first word."""
    return ScriptedScorer(lambda steps: table.get(steps[-1].split()[0], default))


async def run(backend, strategy, scorer):
    return await Controller(backend, verifier=scorer).run(PROBLEM, strategy)


def calls(backend):
    return [(r.prefix, r.sampling.n) for r in backend.requests]


def chosen_text(result):
    return result.candidates[result.chosen].text


class Tracking(ScriptedBackend):
    """Records how many requests were in flight when each one started."""

    def __init__(self, script):
        super().__init__(script)
        self.live = 0
        self.in_flight: list[int] = []

    async def stream(self, request):
        self.live += 1
        self.in_flight.append(self.live)
        try:
            async for chunk in super().stream(request):
                yield chunk
        finally:
            self.live -= 1


# -- steps and scores -------------------------------------------------------------------------------


def test_steps_split_join_and_finish() -> None:
    assert split_steps("a\n\nb\n\n\n\nc\n\n") == ["a", "b", "c"]
    assert split_steps("a|b", "|") == ["a", "b"]
    assert step_prefix(["a", "b"]) == "a\n\nb\n\n" and step_prefix([]) == ""
    assert is_final_step("so \\boxed{7}") and is_final_step("Answer: 7") and not is_final_step("x = 7")


def test_aggregations() -> None:
    history = [0.9, 0.5, 0.8]
    for how, expected in (("last", 0.8), ("min", 0.5), ("product", 0.9 * 0.5 * 0.8), ("model", 0.8)):
        value = None
        for score in history:
            value = aggregate(how, value, score)
        assert value == pytest.approx(expected), how


def test_docstring_examples() -> None:
    for module in (process, step_tree, beam_search, dvts, particle_filtering, a_star):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__


# -- beam search, DVTS, early rejection -------------------------------------------------------------

STEP1 = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.3}
STEP2 = {"s4": 0.2, "s5": 0.6, "s6": 0.7, "s7": 0.1}
STEP3 = {"s8": 0.3, "s9": 0.95, "s10": 0.8, "s11": 0.4}


async def test_beam_search_keeps_the_top_n_over_m_and_picks_the_best_solution() -> None:
    backend = ScriptedBackend(numbered(depth=3))
    scorer = by_name(STEP1 | STEP2 | STEP3)
    result = await run(backend, BeamSearch(n=4, width=2, scorer="verifier"), scorer)
    assert calls(backend) == [
        ("", 4),
        ("s1\n\n", 2),  # the top 2 of step 1, best first
        ("s2\n\n", 2),
        ("s2\n\ns6\n\n", 2),  # s6 (0.7) and s5 (0.6) beat s4 and s7
        ("s1\n\ns5\n\n", 2),
    ]
    assert [len(batch) for batch in scorer.batches] == [4, 4, 4]  # one scorer batch per step
    assert chosen_text(result) == "s2\n\ns6\n\ns9 \\boxed{9}" and result.answer == "9"
    assert len(result.candidates) == 12  # every node is recorded, partial ones too
    partial = [c for c in result.candidates if c.scores["step"] < 3]
    assert all(c.answer is None for c in partial)
    assert result.candidates[result.chosen].scores["process"] == 0.95


async def test_one_step_of_all_beams_goes_out_at_once_and_the_cache_serves_the_prefix() -> None:
    backend = Tracking(numbered(depth=3))
    result = await run(backend, BeamSearch(n=4, width=2, scorer="verifier"), by_name(STEP1 | STEP2 | STEP3))
    # Each step's two requests are in flight together; steps come one after another.
    assert backend.in_flight == [1, 1, 2, 1, 2]
    depths = [r.prefix.count("\n\n") for r in backend.requests]
    assert depths == sorted(depths)
    # Every step request resubmits its parent's prompt, which the prefix cache serves in full.
    for c in result.candidates:
        if c.scores["step"] > 1:
            assert c.prompt_tokens - c.cached_tokens == 1  # only the newest step is new
    stats = search_stats(result.candidates)
    assert stats["scorer_calls"] == 12 and stats["output_tokens"] == result.usage["output_tokens"]
    assert stats["cached_tokens"] / stats["prompt_tokens"] == stats["cache_share"] > 0.5


async def test_the_critical_path_of_a_beam_search_is_one_sample_per_step() -> None:
    # Every step is "sN w w" (3 tokens) and every final one "sN w w \\boxed{N}" (4): the samples
    # of a step decode side by side, the steps one after another.
    backend = ScriptedBackend(numbered(depth=3, words=2))
    result = await run(backend, BeamSearch(n=4, width=2, scorer="verifier"), by_name(STEP1 | STEP2 | STEP3))
    assert calls(backend) == [("", 4), *[(ANY, 2)] * 4]
    longest = max(c.output_tokens for c in result.candidates)
    assert longest == 4 and result.usage["output_tokens"] == 4 * 3 + 4 * 3 + 4 * 4
    assert longest < result.usage["sequential_tokens"] == 3 + 3 + 4 <= result.usage["output_tokens"]


async def test_dvts_keeps_the_best_of_each_subtree() -> None:
    table = STEP1 | {"s0": 0.8} | STEP2
    backend = ScriptedBackend(numbered(depth=2))
    result = await run(backend, DVTS(n=4, width=2, scorer="verifier"), by_name(table))
    assert calls(backend) == [("", 4), ("s1\n\n", 2), ("s2\n\n", 2)]  # subtrees {s0, s1} and {s2, s3}
    assert chosen_text(result) == "s2\n\ns6 \\boxed{6}"
    beam = ScriptedBackend(numbered(depth=2))
    await run(beam, BeamSearch(n=4, width=2, scorer="verifier"), by_name(table))
    assert calls(beam) == [("", 4), ("s1\n\n", 2), ("s0\n\n", 2)]  # the global top 2


async def test_weighted_selector_votes_over_solutions() -> None:
    def script(request, number):
        return ["\\boxed{1}", "\\boxed{2}", "\\boxed{2}", "\\boxed{3}"][number]

    scores = {"\\boxed{1}": 0.9, "\\boxed{2}": 0.5, "\\boxed{3}": 0.1}
    scorer = ScriptedScorer(lambda steps: scores[steps[-1]])
    best = await run(ScriptedBackend(script), BeamSearch(n=4, width=2, scorer="verifier"), scorer)
    vote = await run(
        ScriptedBackend(script), BeamSearch(n=4, width=2, scorer="verifier", selector="weighted"), scorer
    )
    assert (best.answer, vote.answer) == ("1", "2")


async def test_early_rejection_with_tau_above_the_step_length_is_beam_search() -> None:
    plain, early = ScriptedBackend(numbered(3, words=3)), ScriptedBackend(numbered(3, words=3))
    scores = by_name(STEP1 | STEP2 | STEP3)
    a = await run(plain, BeamSearch(n=4, width=2, scorer="verifier"), scores)
    b = await run(early, BeamSearch(n=4, width=2, scorer="verifier", reject_at=50), scores)
    assert calls(plain) == calls(early) and chosen_text(a) == chosen_text(b)


async def test_early_rejection_scores_partial_steps_and_completes_only_the_kept() -> None:
    table = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.3}
    backend = ScriptedBackend(numbered(depth=2, words=4))
    scorer = by_name(table)
    result = await run(backend, BeamSearch(n=4, width=2, scorer="verifier", reject_at=2), scorer)
    assert [len(b) for b in scorer.batches] == [4, 4]
    assert scorer.batches[0][1] == ("s1 w ",)  # scored two tokens into the step
    assert calls(backend)[:3] == [("", 4), ("s1 w ", 1), ("s2 w ", 1)]  # only the kept complete
    assert backend.requests[0].sampling.max_tokens == 2 and backend.requests[1].sampling.max_tokens == 254
    assert calls(backend)[3][0] == "s1 w w w w\n\n"  # the next step continues the completed one
    assert result.answer is not None
    plain = ScriptedBackend(numbered(depth=2, words=4))
    await run(plain, BeamSearch(n=4, width=2, scorer="verifier"), by_name(table))
    assert backend.decoded_tokens < plain.decoded_tokens
    cut = [c for c in result.candidates if c.scores["cut"] == 1.0]
    assert len(cut) == 8 and all(c.answer is None for c in cut)


# -- particle filtering and particle Gibbs ----------------------------------------------------------


async def test_pf_with_a_dominant_particle_copies_it_and_groups_the_copies() -> None:
    table = {"s2": 0.99, "s5": 0.99, "s10": 0.9}
    backend = ScriptedBackend(numbered(depth=3))
    scorer = by_name(table, default=0.01)
    pf = ParticleFiltering(particles=4, softmax_temperature=0.01, scorer="verifier", aggregation="last")
    result = await run(backend, pf, scorer)
    assert calls(backend) == [("", 4), ("s2\n\n", 4), ("s2\n\ns5\n\n", 4)]
    assert chosen_text(result) == "s2\n\ns5\n\ns10 \\boxed{10}" and result.answer == "10"
    assert [len(b) for b in scorer.batches] == [4, 4, 4]


async def test_pf_never_extends_finished_particles_and_scores_each_active_one_once() -> None:
    backend = ScriptedBackend(numbered(depth=4, final=frozenset({1})))
    scorer = by_name({"s1": 0.9}, default=0.5)
    pf = ParticleFiltering(particles=4, scorer="verifier", aggregation="last")
    result = await run(backend, pf, scorer)
    assert not any(r.prefix.startswith("s1 ") for r in backend.requests)
    assert result.answer == "1"  # s1 finished at step 1, was carried along unextended, and wins
    assert sum(len(b) for b in scorer.batches) == sum(r.sampling.n for r in backend.requests)
    again = await run(ScriptedBackend(numbered(depth=4, final=frozenset({1}))), pf, scorer)
    assert [c.text for c in again.candidates] == [c.text for c in result.candidates]  # seeded


async def test_particle_gibbs_keeps_the_reference_and_forks_it() -> None:
    table = {"s1": 0.99, "s2": 0.9, "s3": 0.5, "s4": 0.01, "s5": 0.5}
    backend = ScriptedBackend(numbered(depth=2))
    pg = ParticleFiltering(
        particles=2, iterations=2, softmax_temperature=0.01, scorer="verifier", aggregation="last"
    )
    result = await run(backend, pg, by_name(table, default=0.01))
    # Iteration 2: one fresh particle (N - 1); the reference s1/s2 outweighs it at step 1, so the
    # draw forks the reference cut to one step and grows it again.
    assert calls(backend) == [("", 2), ("s1\n\n", 2), ("", 1), ("s1\n\n", 1)]
    assert chosen_text(result) == "s1\n\ns2 \\boxed{2}"  # the reference, kept, has the best score


def test_resampling_weights_transforms_and_temperature() -> None:
    assert resampling_weights([0.9, 0.1], "logit", 1.0) == pytest.approx([81 / 82, 1 / 82])
    raw = np.exp([0.9, 0.1]) / np.exp([0.9, 0.1]).sum()
    assert resampling_weights([0.9, 0.1], "raw", 1.0) == pytest.approx(raw)
    assert resampling_weights([0.99, 0.1, 0.5], "logit", 1e9) == pytest.approx([1 / 3] * 3)
    assert resampling_weights([0.6, 0.5, 0.4], "logit", 1e-3) == pytest.approx([1, 0, 0])


def test_systematic_resampling_counts_and_seeded_multinomial() -> None:
    weights = np.array([0.5, 0.25, 0.125, 0.125])
    for seed in range(5):
        drawn = resample(weights, 8, "systematic", np.random.default_rng(seed))
        assert Counter(drawn) == {0: 4, 1: 2, 2: 1, 3: 1}
    first = resample(weights, 8, "multinomial", np.random.default_rng(7))
    assert first == resample(weights, 8, "multinomial", np.random.default_rng(7))


# -- A*-decoding ------------------------------------------------------------------------------------


def labelled(k: int, goal_depth: int | None = None):
    """Children are ``<depth><a|b|...>`` by their index in the request; goals answer 7."""

    def script(request, number):
        depth = request.prefix.count("\n\n") + 1
        step = f"{depth}{'abcd'[number % k]}"
        return step + (" \\boxed{7}" if depth == goal_depth else "\n\nmore")

    return script


def path_scores(table, default=0.3):
    return ScriptedScorer(lambda steps: table.get(tuple(s.split()[0] for s in steps), default))


async def test_a_star_follows_a_rising_path_in_exactly_depth_expansions() -> None:
    def rising(steps):
        return 0.5 + 0.1 * len(steps) if all(s.split()[0].endswith("a") for s in steps) else 0.2

    backend = ScriptedBackend(labelled(k=2, goal_depth=3))
    strategy = AStar(k=2, budget=10, budget_unit="expansions", scorer="verifier")
    result = await run(backend, strategy, ScriptedScorer(rising))
    assert calls(backend) == [("", 2), ("1a\n\n", 2), ("1a\n\n2a\n\n", 2)]
    assert chosen_text(result) == "1a\n\n2a\n\n3a \\boxed{7}" and result.answer == "7"


# 1a rises to 0.9 and then dips to 0.85; 1b stays at 0.3. penalize_drops: f = drops + h, so the dip
# (f = 0.05 + 0.15) beats 1b (f = 0.7); consistent: f = 1 + drops, so 1b (1.0) beats the dip (1.05).
TABLE = {("1a",): 0.9, ("1b",): 0.3, ("1a", "2a"): 0.85, ("1a", "2b"): 0.1}


@pytest.mark.parametrize(
    ("g_mode", "third", "f_1a"),
    [("penalize_drops", "1a\n\n2a\n\n", 0.1), ("consistent", "1b\n\n", 1.0)],
)
async def test_a_star_expansion_order_depends_on_the_g_mode(g_mode, third, f_1a) -> None:
    backend = ScriptedBackend(labelled(k=2))
    strategy = AStar(k=2, budget=3, budget_unit="expansions", g_mode=g_mode, scorer="verifier")
    result = await run(backend, strategy, path_scores(TABLE))
    step_requests = [r.prefix for r in backend.requests if not r.prefix.endswith(step_tree.ANSWER_PHRASE)]
    assert step_requests == ["", "1a\n\n", third]
    assert backend.requests[-1].prefix.endswith(step_tree.ANSWER_PHRASE)  # budget spent: answer forced
    assert result.params["g_mode"] == g_mode  # the choice is recorded with the run
    first = {c.text: c.scores for c in result.candidates}["1a"]
    assert first["h"] == pytest.approx(0.1) and first["f"] == pytest.approx(f_1a)


async def test_a_star_consistent_f_never_decreases_along_a_path() -> None:
    def noisy(steps):
        return (sum(ord(ch) for s in steps for ch in s) * 37 % 100) / 100

    strategy = AStar(k=3, budget=8, budget_unit="expansions", g_mode="consistent", scorer="verifier")
    result = await run(ScriptedBackend(labelled(k=3)), strategy, ScriptedScorer(noisy))
    f = {c.text: c.scores["f"] for c in result.candidates if not c.scores["forced"]}
    assert len(f) == 24
    for text, value in f.items():
        parent = text.rpartition("\n\n")[0]
        assert value >= f.get(parent, 1.0) - 1e-12


async def test_a_star_budget_in_scorer_calls_counts_k_per_expansion() -> None:
    backend = ScriptedBackend(labelled(k=4))
    result = await run(backend, AStar(k=4, budget=8, scorer="verifier"), path_scores({}))
    assert len(backend.requests) == 2 + 1  # two expansions, then the best partial's forced answer
    assert result.candidates[result.chosen].scores["forced"] == 1


# -- generative scoring, aggregation modes ----------------------------------------------------------


async def test_generative_scorer_reads_p_yes_from_the_judge_and_batches_a_step() -> None:
    def judge(request, number):
        shown = request.messages[-1].content.split("Partial solution:\n")[1].split("\n\nIs this")[0]
        return "Yes" if "good" in shown.split("\n\n")[-1] else "No"

    def policy(request, number):
        done = request.prefix.count("\n\n")
        return f"s{number}" + (" good" if number in (1, 2) else "") + (" \\boxed{5}" if done else "\n\nmore")

    policy_backend, judge_backend = ScriptedBackend(policy), ScriptedBackend(judge)
    controller = Controller({"policy": policy_backend, "judge": judge_backend})
    strategy = BeamSearch(n=2, width=2, scorer_backend="judge")
    result = await controller.run(PROBLEM, strategy)
    assert [r.prefix for r in policy_backend.requests] == ["", "s1 good\n\n"]
    assert chosen_text(result) == "s1 good\n\ns2 good \\boxed{5}"
    assert result.candidates[result.chosen].scores["step_score"] == 1.0
    assert len(judge_backend.requests) == 4
    sampling = judge_backend.requests[0].sampling
    assert (sampling.max_tokens, sampling.logprobs, sampling.temperature) == (1, 20, 0.0)


async def test_generative_scorer_direct() -> None:
    backend = ScriptedBackend(
        lambda request, number: "No" if "bad" in request.messages[-1].content else "Yes"
    )
    ctx = Context(PROBLEM, (), backend, Meter(Budget()))
    assert await GenerativeScorer().score(ctx, [["a", "fine"], ["a", "bad"]]) == [1.0, 0.0]


async def test_model_aggregation_scores_the_whole_path_as_one_step() -> None:
    scorer = by_name(STEP1 | STEP2 | STEP3)
    strategy = BeamSearch(n=4, width=2, scorer="verifier", aggregation="model")
    await run(ScriptedBackend(numbered(depth=3)), strategy, scorer)
    assert scorer.batches[1][0] == ("s1\n\ns4",)


@pytest.mark.parametrize(("how", "combine"), [("min", min), ("product", lambda a, b: a * b)])
async def test_min_and_product_combine_the_step_scores_of_a_path(how, combine) -> None:
    strategy = BeamSearch(n=4, width=2, scorer="verifier", aggregation=how)
    result = await run(ScriptedBackend(numbered(depth=3)), strategy, by_name(STEP1 | STEP2 | STEP3))
    process = {c.text: c.scores["process"] for c in result.candidates}
    for c in result.candidates:
        parent = c.text.rpartition("\n\n")[0]
        expected = c.scores["step_score"] if not parent else combine(process[parent], c.scores["step_score"])
        assert c.scores["process"] == pytest.approx(expected)
    assert process["s1\n\ns5"] == pytest.approx(combine(0.9, 0.6))


# -- parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: BeamSearch(n=6, width=4),
        lambda: BeamSearch(reject_at=-1),
        lambda: BeamSearch(delimiter=""),
        lambda: BeamSearch(max_steps=0),
        lambda: BeamSearch(step_tokens=0),
        lambda: DVTS(n=0),
        lambda: ParticleFiltering(particles=0),
        lambda: ParticleFiltering(iterations=2, particles=1),
        lambda: ParticleFiltering(softmax_temperature=0.0),
        lambda: ParticleFiltering(aggregation="mean"),
        lambda: AStar(k=0),
        lambda: AStar(budget=0),
        lambda: AStar(frontier=0),
    ],
)
def test_bad_parameters_raise_config_error(build) -> None:
    with pytest.raises(ConfigError):
        build()


def test_registered_by_name() -> None:
    assert isinstance(STRATEGIES.create("beam", {"n": "8", "width": "2"}), BeamSearch)
    assert isinstance(STRATEGIES.create("dvts", {}), DVTS)
    assert STRATEGIES.create("pf", {"resampling": "systematic"}).resampling == "systematic"
    assert STRATEGIES.create("a-star", {"g_mode": "consistent"}).g_mode == "consistent"
    with pytest.raises(ConfigError):
        STRATEGIES.create("a-star", {"g_mode": "other"})


async def test_scorer_verifier_needs_a_process_scoring_verifier() -> None:
    with pytest.raises(ConfigError, match="scores steps"):
        await Controller(ScriptedBackend(numbered(2))).run(PROBLEM, BeamSearch(scorer="verifier"))


# -- step boundaries: end of text, open steps, forced answers ---------------------------------------


async def test_end_of_text_finishes_a_path_that_states_no_boxed_answer() -> None:
    def script(request, number):
        return "first step\n\nmore" if not request.prefix else "so the result is 42"

    backend = ScriptedBackend(script)
    result = await run(backend, BeamSearch(n=1, width=1, scorer="verifier"), by_name({}))
    assert calls(backend) == [("", 1), ("first step\n\n", 1)]  # no third request: the text ended
    assert result.answer == "42" and chosen_text(result) == "first step\n\nso the result is 42"


async def test_scripted_completions_tell_a_stop_string_from_the_end_of_text() -> None:
    from reasoning import Request, Sampling, collect

    backend = ScriptedBackend(["a b\n\nc", "a b"])
    [stopped] = await collect(backend, Request((), Sampling(stop=("\n\n",))))
    [ended] = await collect(backend, Request((), Sampling(stop=("\n\n",))))
    assert (stopped.text, stopped.finish_reason, stopped.stop_string) == ("a b", "stop", "\n\n")
    assert (ended.text, ended.finish_reason, ended.stop_string) == ("a b", "stop", None)


async def test_a_step_stopped_by_the_token_cap_stays_open_and_is_continued_mid_step() -> None:
    def script(request, number):
        if not request.prefix:
            return "x = 1 + 2 + 3\n\nmore"  # 7 scripted tokens: cut after 4
        if not request.prefix.endswith("\n\n"):
            return "2 + 3\n\nmore"  # the rest of the open step
        return "\\boxed{6}"

    backend = ScriptedBackend(script)
    strategy = BeamSearch(n=1, width=1, step_tokens=4, scorer="verifier")
    result = await run(backend, strategy, by_name({}))
    assert calls(backend) == [("", 1), ("x = 1 + ", 1), ("x = 1 + 2 + 3\n\n", 1)]
    assert chosen_text(result) == "x = 1 + 2 + 3\n\n\\boxed{6}" and result.answer == "6"
    first, second, third = result.candidates
    assert first.scores["cut"] == 1 and second.scores["step"] == 1 and third.scores["step"] == 2


async def test_max_steps_forces_a_stated_answer_instead_of_the_last_number() -> None:
    def script(request, number):
        if request.prefix.endswith(step_tree.ANSWER_PHRASE):
            return "7} and 99 more"
        return f"step {number} has 3 apples\n\nmore"

    backend = ScriptedBackend(script)
    result = await run(backend, BeamSearch(n=1, width=1, max_steps=2, scorer="verifier"), by_name({}))
    prefixes = [r.prefix for r in backend.requests]
    assert prefixes[-1] == "step 0 has 3 apples\n\nstep 1 has 3 apples" + step_tree.ANSWER_PHRASE
    assert backend.requests[-1].sampling.temperature == 0 and len(prefixes) == 3
    assert result.answer == "7" and result.candidates[result.chosen].scores["forced"] == 1


# -- value probe and scorer choice ------------------------------------------------------------------


def value_probe(tmp_path, layers=(2, 4), hidden=3) -> str:
    """An uncalibrated logistic exit probe that reads feature 0."""
    from reasoning.engine.models import fingerprint
    from reasoning.probes.probe import Probe, ProbeCard

    model = fingerprint("scripted")
    width = hidden * len(layers)
    w = np.zeros((1, width), dtype=np.float32)
    w[0, 0] = 4.0
    card = ProbeCard(
        kind="exit",
        model={"name": model.name, "sha256": model.sha256},
        layers=list(layers),
        hidden_size=hidden,
        position="decision-point",
        hidden=[],
        training_data_sha256="0" * 64,
    )
    arrays = {"mean": np.zeros(width), "scale": np.ones(width), "w0": w, "b0": np.array([-2.0])}
    return str(Probe(card, arrays).save(tmp_path / "value"))


async def test_value_probe_scores_each_path_at_its_last_step_boundary(tmp_path) -> None:
    read: list[tuple[str, tuple[int, ...]]] = []

    def states(request, layers, positions):
        read.append((request.prefix, tuple(layers)))
        good = float("good" in split_steps(request.prefix)[-1])
        return np.full((len(positions), len(layers), 3), good, dtype=np.float32)

    def policy(request, number):
        done = request.prefix.count("\n\n")
        return f"s{number}" + (" good" if number in (1, 2) else "") + (" \\boxed{5}" if done else "\n\nmore")

    backend = ScriptedBackend(policy, hidden_states=states)
    strategy = BeamSearch(n=2, width=2, scorer="probe", probe=value_probe(tmp_path))
    assert strategy.needs_hidden_states
    result = await Controller(backend).run(PROBLEM, strategy)
    assert sorted(read[:2]) == [("s0\n\n", (2, 4)), ("s1 good\n\n", (2, 4))]  # prefix + delimiter
    assert chosen_text(result) == "s1 good\n\ns2 good \\boxed{5}"
    scores = [c.scores["step_score"] for c in result.candidates]
    assert scores[:2] == pytest.approx([1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-(4.0 - 2.0)))])
    assert result.usage["calls"] == 2 + 4  # two step requests, four probe reads


async def test_value_probe_for_another_model_is_refused(tmp_path) -> None:
    from reasoning.probes.probe import ProbeMismatch

    zeros = lambda r, layers, p: np.zeros((1, len(layers), 3))  # noqa: E731
    backend = ScriptedBackend(numbered(2), hidden_states=zeros, model="qwen2.5-coder-0.5b-instruct")
    strategy = BeamSearch(n=2, width=2, scorer="probe", probe=value_probe(tmp_path))
    with pytest.raises(ProbeMismatch):
        await Controller(backend).run(PROBLEM, strategy)


@pytest.mark.parametrize(
    "params",
    [{"scorer": "other"}, {"scorer": "probe"}, {"probe": "x.json"}],
)
def test_scorer_choice_is_checked(params) -> None:
    with pytest.raises(ConfigError, match="scorer"):
        BeamSearch(**params)


async def test_prm_scorer_sends_tagged_steps_and_reads_the_newest_step() -> None:
    def rewards(request):
        steps = request.messages[-1].content.split("<extra_0>")[:-1]
        return [0.9 if "good" in s else 0.2 for s in steps]

    def policy(request, number):
        done = request.prefix.count("\n\n")
        return f"s{number}" + (" good" if number in (0, 3) else "") + (" \\boxed{5}" if done else "\n\nmore")

    prm = ScriptedBackend(["unused"], rewards=rewards, name="prm")
    controller = Controller({"policy": ScriptedBackend(policy), "prm": prm})
    result = await controller.run(PROBLEM, BeamSearch(n=2, width=2, scorer="prm"))
    first = prm.reward_requests[0].messages
    assert [m.role for m in first] == ["system", "user", "assistant"]
    assert first[1].content == PROBLEM.question and first[2].content in ("s0 good<extra_0>", "s1<extra_0>")
    assert chosen_text(result) == "s0 good\n\ns3 good \\boxed{5}"
    assert [c.scores["step_score"] for c in result.candidates] == pytest.approx([0.9, 0.2, 0.2, 0.9])
    assert len(prm.requests) == 0 and result.usage_by_backend["prm"]["calls"] == 4


async def test_prm_model_aggregation_sends_the_path_as_one_step() -> None:
    prm = ScriptedBackend(["unused"], rewards=lambda r: [0.5], name="prm")
    controller = Controller({"policy": ScriptedBackend(numbered(2)), "prm": prm})
    await controller.run(PROBLEM, BeamSearch(n=2, width=2, scorer="prm", aggregation="model"))
    last = prm.reward_requests[-1].messages[-1].content
    assert last.count("<extra_0>") == 1 and last.endswith("<extra_0>") and "\n\n" in last


async def test_prm_scorer_on_a_backend_without_rewards_names_the_capability() -> None:
    from reasoning import CapabilityError

    controller = Controller({"policy": ScriptedBackend(numbered(2)), "prm": ScriptedBackend(["x"])})
    with pytest.raises(CapabilityError, match="process rewards"):
        await controller.run(PROBLEM, BeamSearch(n=2, width=2, scorer="prm"))


async def test_a_budget_stop_returns_the_best_finished_path_never_a_raw_step() -> None:
    from reasoning import Budget

    def script(request, number):
        return "s0 so \\boxed{3}" if number == 0 else "s1 has 99 apples\n\nmore"

    controller = Controller(ScriptedBackend(script), verifier=by_name({"s0": 0.4, "s1": 0.9}))
    run = await controller.run(PROBLEM, BeamSearch(n=2, width=2, scorer="verifier"), Budget(calls=1))
    assert run.stop_reason == "budget:calls"
    assert run.answer == "3" and run.candidates[run.chosen].text == "s0 so \\boxed{3}"
    assert [c.answer for c in run.candidates] == ["3", None]  # "99" of the open path is never read


async def test_a_budget_stop_before_any_finished_path_has_no_answer() -> None:
    from reasoning import Budget

    controller = Controller(ScriptedBackend(numbered(depth=3)), verifier=by_name({}))
    run = await controller.run(PROBLEM, BeamSearch(n=2, width=2, scorer="verifier"), Budget(calls=1))
    assert run.stop_reason == "budget:calls" and run.answer is None and len(run.candidates) == 2
