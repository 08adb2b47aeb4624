"""EngineConfig: one set of engine settings, checked before anything slow starts (no engine here)."""

import inspect

import pytest

from reasoning import ConfigError
from reasoning.backends.vllm_local import VLLMBackend, load_backends
from reasoning.backends.vllm_reward import VLLMRewardBackend
from reasoning.config import EngineConfig, EngineSettings
from reasoning.serving.server import VLLMServer


def defaults(function: object) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()  # type: ignore[arg-type]
        if p.default is not inspect.Parameter.empty
    }


def test_defaults_are_the_engines_defaults() -> None:
    config = EngineConfig()
    assert (config.model, config.dtype, config.kv_cache_gb, config.max_num_seqs) == (None, "auto", 2.0, 64)
    assert (config.max_model_len, config.block_size, config.seed) == (None, None, 0)
    assert config.enforce_eager is True and config.hidden_states is False


def test_engine_defaults_are_written_once() -> None:
    """The keyword forms take `EngineSettings` and state no engine default of their own."""
    assert set(EngineSettings.__annotations__) == set(EngineConfig.model_fields) - {"model"}
    for function in (VLLMBackend.load, VLLMServer.__init__, VLLMRewardBackend.load, load_backends):
        stated = set(defaults(function)) & set(EngineConfig.model_fields)
        assert stated <= {"model"}, (function, stated)
    reward = EngineConfig.reward("/models/prm")
    assert (reward.kv_cache_gb, reward.max_model_len) == (0.5, 4096)
    assert EngineConfig.reward("/models/prm", kv_cache_gb=0.1).kv_cache_gb == 0.1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kv_cache_gb": -1}, "invalid engine config: kv_cache_gb must be greater than 0 (got -1)"),
        ({"kv_cache_gb": 0}, "kv_cache_gb must be greater than 0 (got 0)"),
        ({"dtype": "int3"}, "dtype 'int3' is not one of auto, bfloat16, float16, float32"),
        ({"max_num_seqs": 0}, "max_num_seqs must be greater than 0"),
        ({"block_size": "big"}, "block_size must be a valid integer"),
        ({"kv_cache": 1.0}, "kv_cache is not a known setting"),
        ({"dtype": "fp8", "seed": "x"}, "dtype 'fp8' is not one of"),
    ],
)
def test_an_invalid_setting_is_a_config_error_naming_the_field(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig(**settings)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match="invalid engine config"):
        EngineConfig.model_validate(settings)


def test_every_error_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        EngineConfig(dtype="fp8", seed="x")
    assert "dtype 'fp8'" in str(info.value) and "seed must be a valid integer" in str(info.value)


def test_a_config_is_frozen() -> None:
    config = EngineConfig(model="0.5b")
    with pytest.raises(ValueError, match="frozen"):
        config.kv_cache_gb = 3.0  # type: ignore[misc]
    assert config.model_copy(update={"kv_cache_gb": 3.0}).kv_cache_gb == 3.0


def test_the_keyword_forms_check_the_settings_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*args: object, **kwargs: object) -> str:
        raise AssertionError("a model was resolved before the settings were checked")

    for module in ("backends.vllm_local", "backends.vllm_reward", "serving.server"):
        monkeypatch.setattr(f"reasoning.{module}.resolve_model", no_model)
    with pytest.raises(ConfigError, match="kv_cache_gb must be greater than 0"):
        VLLMBackend.load(kv_cache_gb=-1)
    with pytest.raises(ConfigError, match="dtype 'int3'"):
        VLLMBackend.load(dtype="int3")
    with pytest.raises(ConfigError, match="max_model_len must be greater than 0"):
        VLLMRewardBackend.load("/models/prm", max_model_len=-5)
    with pytest.raises(ConfigError, match="needs a model"):
        VLLMRewardBackend.from_config(EngineConfig())
    with pytest.raises(ConfigError, match="max_num_seqs must be greater than 0"):
        VLLMServer(max_num_seqs=0)


def test_a_server_from_a_config_is_the_server_from_its_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reasoning.serving.server.resolve_model", lambda model, *_, **__: "/models/m")
    monkeypatch.setattr("reasoning.serving.server.on_gpu", lambda: False)
    config = EngineConfig(model="/models/m", kv_cache_gb=0.5, max_num_seqs=8, dtype="float32", seed=3)
    by_config = VLLMServer.from_config(config, port=8123)
    by_keywords = VLLMServer("/models/m", port=8123, kv_cache_gb=0.5, max_num_seqs=8, dtype="float32", seed=3)
    assert by_config.config == by_keywords.config == config
    assert by_config.command() == by_keywords.command()
    command = " ".join(by_config.command())
    assert "--max-num-seqs 8" in command and "--dtype float32" in command and "--seed 3" in command
    assert f"--kv-cache-memory-bytes {1 << 29}" in command and "--block-size" not in command
    blocks = VLLMServer.from_config(config.model_copy(update={"block_size": 32}), port=8123)
    assert "--block-size 32" in " ".join(blocks.command())


def test_start_reads_shorthands_and_refuses_what_is_no_backend() -> None:
    from reasoning.backends.specs import ScriptedReply, ServerBackend, VLLMEngine
    from reasoning.backends.start import as_spec, start

    assert isinstance(as_spec(None), VLLMEngine) and as_spec("0.5b").model == "0.5b"  # type: ignore[union-attr]
    assert isinstance(as_spec("http://h:1"), ServerBackend) and isinstance(as_spec("scripted"), ScriptedReply)
    for bad, named in ((42, "42"), ({"kind": "bogus"}, "bogus")):
        with pytest.raises(ConfigError, match=f"invalid backend.*{named}"):
            as_spec(bad)  # type: ignore[arg-type]
    assert start("scripted").model == "scripted"  # type: ignore[attr-defined]
    assert EngineConfig(max_model_len=100).context_length(2048) == 100
    assert EngineConfig().context_length(2048) == 2048 and EngineConfig().context_length() == 4096
