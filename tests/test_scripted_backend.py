import contextlib

from reasoning import Message, Request, Sampling, ScriptedBackend, collect


async def test_stream_interleaves_and_honours_stop_and_length() -> None:
    backend = ScriptedBackend(["a b STOP c", "d e f g"])
    request = Request((Message("user", "q"),), Sampling(n=2, max_tokens=3, stop=("STOP",)))
    completions = await collect(backend, request)
    assert [c.text for c in completions] == ["a b ", "d e f "]
    assert [c.finish_reason for c in completions] == ["stop", "length"]


async def test_closing_the_stream_cancels() -> None:
    backend = ScriptedBackend(["a b c d e f"])
    request = Request((Message("user", "q"),), Sampling())
    async with contextlib.aclosing(backend.stream(request)) as chunks:
        async for _ in chunks:
            break
    assert backend.cancelled == 1
    assert backend.decoded_tokens == 1


async def test_scripted_finish_order_follows_speeds() -> None:
    backend = ScriptedBackend(["a b c", "d e f"], seconds_per_token=[0.01, 0.001])
    request = Request((Message("user", "q"),), Sampling(n=2))
    order = []
    async for chunk in backend.stream(request):
        if chunk.finish_reason:
            order.append(chunk.index)
    assert order == [1, 0]


async def test_prefix_cache_counts_shared_prompt() -> None:
    backend = ScriptedBackend(["x"])
    base = Request((Message("user", "a long shared question"),), Sampling())
    first = await collect(backend, base)
    second = await collect(backend, Request(base.messages, base.sampling, prefix="step one"))
    assert first[0].cached_tokens == 0
    assert second[0].cached_tokens >= 5
