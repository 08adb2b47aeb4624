"""Integration tests on the real vLLM engine with the embedded default model.

Marked ``engine``; they run in CI. Most run twice through the `backend` fixture: on the
in-process engine and on an OpenAI-compatible vLLM server (each starts once per session,
~45 s on 2 cores). Prompts are tiny and generations short.
"""

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import decoded_tokens

from reasoning import Budget, Context, Controller, Message, Problem, Request, Result, Sampling, collect
from reasoning.strategies import SelfConsistency, Single

pytestmark = pytest.mark.engine

COUNT = (Message("user", "Count from 1 to 60, separated by commas."),)


async def test_streams_tokens_as_they_are_decoded(backend) -> None:
    chunks = [c async for c in backend.stream(Request(COUNT, Sampling(temperature=0, max_tokens=12)))]
    assert len(chunks) >= 6
    assert sum(c.tokens for c in chunks) == 12
    assert chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_a_coarse_stream_interval_sends_the_same_tokens_in_fewer_chunks(backend) -> None:
    sampling = Sampling(temperature=0, max_tokens=24, logprobs=1)
    a = [c async for c in backend.stream(Request(COUNT, sampling))]
    b = [c async for c in backend.stream(Request(COUNT, sampling, stream_interval=8))]
    assert "".join(c.text for c in b) == "".join(c.text for c in a)
    assert sum(c.tokens for c in b) == sum(c.tokens for c in a) == 24
    assert sum(len(c.logprobs) for c in b) == 24
    assert len(a) == 24 and len(b) <= 5  # first token at once, then 8 at a time, the end at once
    assert b[-1].finish_reason == "length" and max(c.tokens for c in b) == 8


async def test_cancel_aborts_in_the_engine_at_once(backend) -> None:
    before = await decoded_tokens(backend)
    received = 0
    async with contextlib.aclosing(
        backend.stream(Request(COUNT, Sampling(temperature=0, max_tokens=400)))
    ) as chunks:
        async for chunk in chunks:
            received += chunk.tokens
            if received >= 3:
                break
    await asyncio.sleep(1.0)
    decoded = await decoded_tokens(backend) - before
    # The engine stopped decoding this request: at most a step or two past the cancel.
    assert decoded - received <= 3, (decoded, received)
    await asyncio.sleep(0.5)
    assert await decoded_tokens(backend) - before == decoded


async def test_n_samples_in_one_request_with_logprobs(backend) -> None:
    request = Request(COUNT, Sampling(temperature=1.0, max_tokens=8, n=3, logprobs=3))
    completions = await collect(backend, request)
    assert [c.index for c in completions] == [0, 1, 2]
    for c in completions:
        assert c.output_tokens == 8 and c.logprobs is not None and len(c.logprobs) == 8
        for token in c.logprobs:
            assert token.logprob <= 0 and 1 <= len(token.top) <= 3
            assert token.top[0][1] >= token.top[-1][1]


async def test_stop_strings_and_prefix_continuation(backend) -> None:
    stopped = await collect(backend, Request(COUNT, Sampling(temperature=0, max_tokens=40, stop=("5",))))
    assert stopped[0].finish_reason == "stop" and "5" not in stopped[0].text
    continued = await collect(
        backend, Request(COUNT, Sampling(temperature=0, max_tokens=6), prefix="1, 2, 3, 4, 5, 6,")
    )
    assert continued[0].text.lstrip().startswith("7")


async def test_prefix_cache_serves_a_repeated_long_prompt(backend) -> None:
    long = (Message("user", " ".join(f"item{i}" for i in range(300)) + "\nHow many items?"),)
    first = await collect(backend, Request(long, Sampling(temperature=0, max_tokens=2)))
    second = await collect(backend, Request(long, Sampling(temperature=0, max_tokens=2), prefix="There are"))
    assert first[0].prompt_tokens > 300
    assert second[0].cached_tokens >= 256, second[0]


async def test_seeded_sampling_is_reproducible_under_concurrent_load(backend) -> None:
    """The request's seed decides its draws, whatever else the engine decodes at the same time.

    Not asserted: identical text to the last token. On CPU the logits' rounding depends on the
    batch's shape and on whether the prompt came from the prefix cache (vLLM promises no batch
    invariance there), so a draw that falls near a token boundary can tip late in a sample: seen
    at token ~12 of this very prompt in bfloat16, on a repeat of the same request alone.
    """
    poem = (Message("user", "Write a short poem about the sea."),)
    request = Request(poem, Sampling(temperature=1.0, max_tokens=16, n=2, seed=1234))
    alone = await collect(backend, request)
    again = await collect(backend, request)
    noise = Request(COUNT, Sampling(temperature=1.0, max_tokens=24, n=3))
    together, _ = await asyncio.gather(collect(backend, request), collect(backend, noise))
    other = await collect(backend, Request(poem, Sampling(temperature=1.0, max_tokens=16, n=2, seed=99)))
    assert alone[0].text != alone[1].text  # the n samples draw differently
    assert [c.text for c in other] != [c.text for c in alone]  # another seed, other draws
    for run in (again, together):  # the same seed: the same draws (the noise took none of them)
        for a, b in zip(alone, run, strict=True):
            assert b.text[:12] == a.text[:12], (a.text, b.text)


async def test_budget_holds_on_the_real_engine(backend) -> None:
    problem = Problem("p", "What is 12 * 7?", answer="84")
    run = await Controller(backend, budget=Budget(output_tokens=40)).run(
        problem, SelfConsistency(n=4, max_tokens=64)
    )
    assert run.usage["output_tokens"] <= 40
    assert len(run.candidates) == 4 and all(c.output_tokens <= 10 for c in run.candidates)


async def test_concurrent_inner_runs_share_the_budget_and_the_record_says_it_cut_them(engine) -> None:
    # Three inner runs at once under 48 tokens: 16 each (they used to get 48, 0 and a refusal).
    from reasoning.answers import written_answer
    from reasoning.compose import build

    problem = Problem("count", COUNT[0].content)
    strategy = build("self-consistency(n=3, inner=single(max_tokens=64))")
    run = await Controller(engine, budget=Budget(output_tokens=48)).run(problem, strategy)
    assert [(c.finish_reason, c.output_tokens) for c in run.candidates] == [("length", 16)] * 3
    assert run.stop_reason == "budget:output_tokens" and run.usage["clamped_samples"] == 3
    assert all(c.answer is None for c in run.candidates if written_answer(c.text) is None)


async def test_a_wall_clock_stop_keeps_every_sample_it_cut(engine) -> None:
    problem = Problem("count", COUNT[0].content)
    run = await Controller(engine, budget=Budget(seconds=1.5)).run(
        problem, SelfConsistency(n=2, max_tokens=400)
    )
    assert run.stop_reason == "budget:seconds"
    assert [c.finish_reason for c in run.candidates] == ["cancelled"] * 2
    assert sum(c.output_tokens for c in run.candidates) == run.usage["output_tokens"]
    assert run.usage["cancelled_tokens"] == run.usage["output_tokens"]


@dataclass(frozen=True)
class _ThreeCounts:
    """Three greedy requests at once, long enough to still be decoding when a sibling stops."""

    async def __call__(self, problem: Problem, ctx: Context) -> Result:
        sampling = Sampling(temperature=0, max_tokens=120)
        await ctx.generate_all([ctx.request(sampling, prefix=f"{i}, ") for i in (1, 10, 20)])
        return Result(answer=None)


async def test_a_budget_stop_leaves_no_request_decoding_in_the_engine(backend) -> None:
    before = await decoded_tokens(backend)
    problem = Problem("count", COUNT[0].content)
    run = await Controller(backend, budget=Budget(output_tokens=30)).run(problem, _ThreeCounts())
    assert run.stop_reason.startswith("budget:"), run.stop_reason
    await asyncio.sleep(1.0)
    decoded = await decoded_tokens(backend) - before
    await asyncio.sleep(0.5)
    assert await decoded_tokens(backend) - before == decoded  # nothing of the problem still runs
    # Decoded = charged, within an engine step or two for each of the three sequences.
    charged = int(run.usage["output_tokens"])
    assert charged <= decoded <= charged + 6, (decoded, charged)


async def test_controller_record_and_resume_on_the_engine(backend, tmp_path: Path) -> None:
    from reasoning.evals.datasets import load_dataset
    from reasoning.evals.run import solve

    problems = load_dataset("gsm8k", limit=3)
    out = tmp_path / "r.jsonl"
    controller = Controller(backend, seed=0)
    strategy = Single(max_tokens=24)
    first = await solve(problems[:2], controller, strategy, output=out)
    assert [r.problem_id for r in first] == [p.id for p in problems[:2]]
    assert first[0].model == "qwen2.5-coder-0.5b-instruct" and first[0].backend == backend.name
    assert first[0].candidates[0].output_tokens == 24 and first[0].correct is not None
    before = await decoded_tokens(backend)
    runs = await solve(problems, controller, strategy, output=out)
    assert len(runs) == 3 and await decoded_tokens(backend) - before == 24
    assert len(out.read_text().splitlines()) == 3


def test_bad_engine_settings_are_one_clear_error() -> None:
    from reasoning import ConfigError, EngineStartError
    from reasoning.backends.vllm_local import VLLMBackend

    with pytest.raises(ConfigError, match="dtype 'int3'"):
        VLLMBackend.load(dtype="int3")
    with pytest.raises(ConfigError, match="no such folder"):
        VLLMBackend.load("./no/such/model")
    with pytest.raises(EngineStartError, match="not enough memory.*lower --kv-cache-gb"):
        VLLMBackend.load(kv_cache_gb=500)


async def test_same_seeded_request_gives_the_same_samples_on_both_backends(engine, remote) -> None:
    poem = (Message("user", "Write a short poem about the sea."),)
    request = Request(poem, Sampling(temperature=1.0, max_tokens=12, n=2, seed=99, logprobs=2))
    local, served = await asyncio.gather(collect(engine, request), collect(remote, request))
    assert [c.text for c in local] == [c.text for c in served]
    assert [c.output_tokens for c in local] == [c.output_tokens for c in served] == [12, 12]
    assert local[0].prompt_tokens == served[0].prompt_tokens == remote.prompt_tokens(request)
    assert [t.token for t in local[0].logprobs] == [t.token for t in served[0].logprobs]
    assert abs(local[0].logprobs[0].logprob - served[0].logprobs[0].logprob) < 1e-3


async def test_same_strategy_gives_the_same_kind_of_record_on_both_backends(engine, remote) -> None:
    problem = Problem("p", "What is 12 * 7?", answer="84")
    strategy = SelfConsistency(n=2, max_tokens=16)
    local = await Controller(engine, seed=3).run(problem, strategy)
    served = await Controller(remote, seed=3).run(problem, strategy)
    assert (local.backend, served.backend) == ("vllm", "openai")
    assert local.engine["dtype"] == served.engine["dtype"] == engine.engine_info["dtype"]
    assert served.engine["server"] == remote.engine_info["server"] and "server" not in local.engine
    skip = {"backend", "usage", "started_at", "engine"}
    assert local.model_dump(exclude=skip | {"candidates"}) == served.model_dump(exclude=skip | {"candidates"})
    for a, b in zip(local.candidates, served.candidates, strict=True):
        assert dataclasses.replace(a, seconds=0.0, started=0.0) == dataclasses.replace(
            b, seconds=0.0, started=0.0
        )
    timings = ("seconds", "busy_seconds")
    assert {k: v for k, v in local.usage.items() if k not in timings} == {
        k: v for k, v in served.usage.items() if k not in timings
    }


async def test_engines_we_start_run_our_cpu_patches_and_say_so_in_the_record(engine) -> None:
    """The worker that samples applied the plugin (top-p without a vocabulary sort), and the
    record carries the engine: dtype and why, device, settings."""
    from reasoning.engine.hardware import choose_dtype

    [patches] = await engine._engine.collective_rpc("reasoning_patches")
    assert "top-p" in patches
    run = await Controller(engine, seed=1).run(
        Problem("p", "What is 2 + 3?"), SelfConsistency(n=2, max_tokens=8, top_p=0.9)
    )
    info = run.engine
    assert info["dtype"] == choose_dtype("auto").dtype and info["dtype_requested"] == "auto"
    assert info["dtype_reason"] == choose_dtype("auto").reason
    assert info["device"] == "cpu" and info["max_num_seqs"] == engine.max_concurrency
    assert len(run.candidates) == 2 and all(
        c.output_tokens == 8 or c.finish_reason == "stop" for c in run.candidates
    )
