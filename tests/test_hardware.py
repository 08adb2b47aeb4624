"""The dtype rule, the machine reading, the doctor, and the vLLM plugin's nucleus filter."""

import pytest

from reasoning import ConfigError
from reasoning.engine.hardware import FLAGS_ENV, Machine, choose_dtype, cpu_kind, machine

AMX = Machine(arch="x86_64", flags=frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}))
AVX512_BF16 = Machine(arch="x86_64", flags=frozenset({"avx2", "avx512f", "avx512_bf16"}))
AVX512 = Machine(arch="x86_64", flags=frozenset({"avx2", "avx512f", "avx512bw"}))
AVX2 = Machine(arch="x86_64", flags=frozenset({"avx", "avx2", "fma"}))
ARM_BF16 = Machine(arch="aarch64", flags=frozenset({"asimd", "bf16"}))
ARM = Machine(arch="aarch64", flags=frozenset({"asimd"}))


@pytest.mark.parametrize(
    ("m", "kind", "dtype", "says"),
    [
        (AMX, "amx", "bfloat16", "AMX-BF16"),
        (AVX512_BF16, "avx512-bf16", "bfloat16", "AVX512-BF16"),
        (AVX512, "avx512", "float32", "without BF16"),
        (AVX2, "avx2", "float32", "AVX2 only"),
        (ARM_BF16, "arm-bf16", "bfloat16", "BF16"),
        (ARM, "arm", "float32", "no native bf16"),
    ],
)
def test_auto_dtype_follows_the_cpus_bf16_support(m: Machine, kind: str, dtype: str, says: str) -> None:
    choice = choose_dtype("auto", m, gpu=False)
    assert (cpu_kind(m), choice.dtype, choice.requested) == (kind, dtype, "auto")
    assert says in choice.reason
    assert str(choice) == f"{dtype} ({choice.reason})"


def test_a_gpu_leaves_the_dtype_to_vllm_and_an_explicit_one_wins() -> None:
    gpu = Machine(flags=AVX2.flags, gpu="NVIDIA H200")
    assert choose_dtype("auto", gpu).dtype == "auto" and "H200" in choose_dtype("auto", gpu).reason
    assert choose_dtype("auto", gpu, gpu=False).dtype == "float32"
    explicit = choose_dtype("bfloat16", AVX2)
    assert (explicit.dtype, explicit.requested, explicit.reason) == (
        "bfloat16",
        "bfloat16",
        "asked for with --dtype",
    )
    with pytest.raises(ConfigError, match="dtype 'int3' is not one of auto, bfloat16, float16, float32"):
        choose_dtype("int3", AVX2)


def test_machine_reads_this_machine_and_the_flags_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    m = machine()
    assert m.cores >= 1 and m.memory_gib > 0 and m.arch
    if m.arch == "x86_64":
        assert "sse2" in m.flags  # every x86-64 CPU has it: /proc/cpuinfo was read
    monkeypatch.setenv(FLAGS_ENV, "avx avx2 fma")
    assert machine().flags == AVX2.flags and choose_dtype("auto", gpu=False).dtype == "float32"


def test_doctor_prints_the_dtype_line_without_starting_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from reasoning.cli import app

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("doctor --no-measure started an engine")

    monkeypatch.setattr("reasoning.backends.vllm_local.VLLMBackend.load", no_engine)
    monkeypatch.setenv(FLAGS_ENV, "avx avx2 fma")
    result = CliRunner().invoke(app, ["doctor", "--no-measure"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"dtype: float32 ({choose_dtype('auto', AVX2, gpu=False).reason})" in lines
    assert any(line.startswith("cpu features: avx2+ fma+ avx512f-") for line in lines)
    assert any(line.startswith("model qwen2.5-coder-0.5b-instruct: ") for line in lines)


def test_nucleus_masks_exactly_what_vllms_sort_masks() -> None:
    import torch
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    from reasoning.backends.vllm_plugin import nucleus

    original = sampler.apply_top_k_top_p_pytorch
    generator = torch.Generator().manual_seed(0)
    vocab = 20_000
    logits = torch.randn(12, vocab, generator=generator) * 3
    logits[:6, :10] += 15  # peaked rows: the nucleus is a handful of tokens
    logits[9:, :10] += 15
    logits[6:9] /= 10  # flat rows: the nucleus is wider than the candidates (full-sort fallback)
    p = torch.tensor([0.95, 0.5, 0.99, 0.8, 1.0, 0.95, 0.9, 0.95, 0.7, 0.95, 1.0, 0.3])
    calls: list[int] = []

    def full_sort(rows: object, rows_p: object) -> object:
        calls.append(len(rows_p))  # type: ignore[arg-type]
        return original(rows, None, rows_p, True)

    want = original(logits.clone(), None, p.clone(), True)
    got = nucleus(logits.clone(), p.clone(), full_sort, candidates=64)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(want)])
    assert calls == [3]  # only the flat rows were sorted
    kept = (~torch.isinf(got)).sum(dim=1)
    assert kept[4] == kept[10] == vocab and 1 <= kept[11] <= kept[0]  # p = 1 rows untouched


def test_the_plugin_does_nothing_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    from reasoning.backends import vllm_plugin

    before = sampler.apply_top_k_top_p_pytorch
    monkeypatch.delenv(vllm_plugin.ENV, raising=False)
    monkeypatch.setattr(vllm_plugin, "APPLIED", [])
    vllm_plugin.register()
    assert sampler.apply_top_k_top_p_pytorch is before and vllm_plugin.APPLIED == []


def test_on_a_small_machine_the_model_runs_in_the_engine_core_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reasoning.backends import vllm_local

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "")  # restored after the test, whatever it was
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    assert vllm_local.engine_core_choice(2)[0] is True
    assert vllm_local.engine_core_choice(vllm_local.IN_PROCESS_WORKER_MAX_CORES + 1)[0] is False
    monkeypatch.setattr(vllm_local.os, "cpu_count", lambda: 2)
    vllm_local.configure_cpu_environment()
    assert vllm_local.os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the user's choice is kept, and named
    vllm_local.configure_cpu_environment()
    assert vllm_local.os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    assert vllm_local.engine_core_choice(2) == (False, "VLLM_ENABLE_V1_MULTIPROCESSING=1 was set")


def test_doctor_says_where_the_model_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning.cli.doctor import report

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    lines = dict(report())
    if machine().gpu is None:
        assert lines["engine worker"] == (
            "the model runs in the engine-core process (VLLM_ENABLE_V1_MULTIPROCESSING=0 was set)"
        )
