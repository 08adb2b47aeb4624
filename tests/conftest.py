from collections.abc import AsyncIterator, Iterator

import pytest

from reasoning import Problem


@pytest.fixture
def problem() -> Problem:
    return Problem(id="p1", question="What is 2+2?", answer="4")


@pytest.fixture(scope="session")
def engine() -> Iterator[object]:
    """The in-process engine on the embedded default model, hidden states on (started once per session)."""
    from reasoning.backends.vllm_local import VLLMBackend

    backend = VLLMBackend.load(kv_cache_gb=1.0, hidden_states=True)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def server() -> Iterator[object]:
    """A vLLM OpenAI-compatible server for the same model on a free loopback port (hidden states on)."""
    from reasoning.serving.server import VLLMServer

    with VLLMServer(kv_cache_gb=1.0, hidden_states=True) as running:
        yield running


@pytest.fixture
async def remote(server) -> AsyncIterator[object]:
    """An OpenAIBackend talking to the session's server."""
    backend = server.backend()
    yield backend
    await backend.aclose()


@pytest.fixture(params=["vllm", "openai"])
def backend(request: pytest.FixtureRequest) -> object:
    """Each real backend in turn: the same test runs in-process and over HTTP."""
    return request.getfixturevalue("engine" if request.param == "vllm" else "remote")


async def decoded_tokens(backend: object) -> int:
    """Tokens the backend's engine decoded so far (its own count, cancelled work included)."""
    return int(await backend.decoded_tokens())


def invoke(*args: str) -> tuple[int, str]:
    """Run the `reasoning` CLI in-process; the exit code and the output (plus any exception)."""
    from typer.testing import CliRunner

    from reasoning.cli import app

    result = CliRunner().invoke(app, list(args))
    text = result.output
    if result.exception and not isinstance(result.exception, SystemExit):
        text += f"\n{type(result.exception).__name__}: {result.exception}"
    return result.exit_code, text
