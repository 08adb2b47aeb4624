"""What the machine can do, and the engine settings chosen from it (dtype first).

The same code runs on CPUs whose bfloat16 speed differs by 15x, so the weight dtype is chosen
from the CPU's features rather than fixed. Measured on one 2-core Xeon with AMX, decoding the
0.5B with vLLM (32 greedy GSM8K prompts x 128 tokens, eager, both cores), with the AVX2 and
AVX-512 machines emulated on the same chip by capping oneDNN's and ATen's instruction sets
(`benchmarks/engine.py --emulate`); an AMD EPYC with AVX2 only, measured directly, agrees:

============================  ============  ============  ===========================
CPU kind                      bfloat16      float32       chosen
============================  ============  ============  ===========================
AMX-BF16 / AVX512-BF16        ~200-260      ~75-95        bfloat16 (~2.5x)
AVX-512 without BF16 (emul.)  27.5          84.5-95       float32 (~3x)
AVX2 only (emulated)          13.5          63.8          float32 (4.7x)
AVX2 only (AMD EPYC, issue)   9.9           45.1          float32 (4.6x)
============================  ============  ============  ===========================

(tok/s.) Without a native bf16 dot product, vLLM's oneDNN path either refuses bf16 ("Failed
to create oneDNN linear, fallback to torch linear") or emulates it; float32 then moves twice
the bytes but computes at full speed. On a GPU the choice is vLLM's (``auto``: the model's own
dtype). ``--dtype`` overrides.

The module reads ``/proc/cpuinfo`` and never imports torch or vLLM, so `reasoning doctor`
and the CLI can explain a choice before an engine starts.

Example:
    >>> choose_dtype("auto", Machine(flags=frozenset({"avx2", "fma"}))).dtype
    'float32'
    >>> choose_dtype("auto", Machine(flags=frozenset({"avx512f", "amx_bf16"}))).dtype
    'bfloat16'
    >>> choose_dtype("float16", Machine()).reason
    'asked for with --dtype'
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from reasoning.backend import Backend
from reasoning.errors import ConfigError

__all__ = [
    "DTYPES",
    "FLAGS_ENV",
    "DtypeChoice",
    "Machine",
    "choose_dtype",
    "cpu_kind",
    "machine",
    "measure_decode",
]

DTYPES = ("auto", "bfloat16", "float16", "float32")
"""Values ``--dtype`` accepts; ``auto`` picks from the machine (`choose_dtype`)."""


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that engine settings depend on."""

    cpu: str = ""
    """CPU model name."""
    arch: str = ""
    """``x86_64``, ``aarch64``, ..."""
    cores: int = 1
    """Logical CPUs this process may use."""
    memory_gib: float = 0.0
    """Total RAM."""
    flags: frozenset[str] = field(default_factory=frozenset)
    """CPU feature flags (x86 ``flags`` / Arm ``Features`` of /proc/cpuinfo)."""
    gpu: str | None = None
    """The first NVIDIA GPU's name, when one is visible (from ``nvidia-smi``, torch not needed)."""

    def has(self, *flags: str) -> bool:
        """True when the CPU has every one of `flags`."""
        return all(f in self.flags for f in flags)


FLAGS_ENV = "REASONING_CPU_FLAGS"
"""When set, the CPU flags `machine` reports instead of /proc/cpuinfo's (space-separated): lets a
test or a benchmark that emulates another CPU kind (`benchmarks/engine.py --emulate`) see the
choices made for that kind."""


def machine() -> Machine:
    """Read this machine's CPU, cores, memory and GPU (cheap: no torch, no vLLM)."""
    cpu, flags = "", frozenset[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not cpu:
            cpu = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / (1 << 20)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    if os.environ.get(FLAGS_ENV) is not None:
        flags = frozenset(os.environ[FLAGS_ENV].split())
    return Machine(
        cpu=cpu or platform.processor(),
        arch=platform.machine(),
        cores=cores,
        memory_gib=round(memory, 1),
        flags=flags,
        gpu=_nvidia_gpu(),
    )


def _nvidia_gpu() -> str | None:
    if not Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def cpu_kind(m: Machine) -> str:
    """The CPU's class as far as decoding speed goes: amx, avx512-bf16, avx512, avx2, arm-bf16, ..."""
    if m.has("amx_bf16"):
        return "amx"
    if m.has("avx512_bf16"):
        return "avx512-bf16"
    if m.has("avx512f"):
        return "avx512"
    if m.has("avx2"):
        return "avx2"
    if m.arch in ("aarch64", "arm64"):
        return "arm-bf16" if m.has("bf16") else "arm"
    return "other"


@dataclass(frozen=True)
class DtypeChoice:
    """The weight dtype an engine runs in, and why."""

    dtype: str
    """``bfloat16``, ``float16``, ``float32``, or ``auto`` (on a GPU: vLLM's choice)."""
    reason: str
    """One line a user can act on."""
    requested: str = "auto"
    """What was asked for."""

    def __str__(self) -> str:
        return f"{self.dtype} ({self.reason})"


def choose_dtype(
    requested: str = "auto", m: Machine | None = None, *, gpu: bool | None = None
) -> DtypeChoice:
    """Resolve ``--dtype`` for this machine.

    Args:
        requested: ``auto`` or an explicit dtype (returned as is).
        m: The machine (default: read this one).
        gpu: Whether the engine runs on a GPU (default: whether `m` shows one).

    Raises:
        ConfigError: `requested` is not one of `DTYPES`.
    """
    if requested not in DTYPES:
        raise ConfigError(f"dtype {requested!r} is not one of {', '.join(DTYPES)}")
    if requested != "auto":
        return DtypeChoice(requested, "asked for with --dtype", requested)
    m = m or machine()
    if gpu if gpu is not None else m.gpu is not None:
        return DtypeChoice("auto", f"GPU {m.gpu or ''}: vLLM uses the model's own dtype".replace("  ", " "))
    kind = cpu_kind(m)
    if kind == "amx":
        return DtypeChoice("bfloat16", "the CPU has AMX-BF16: native bf16 matmuls, ~2.5x float32's speed")
    if kind == "avx512-bf16":
        return DtypeChoice("bfloat16", "the CPU has AVX512-BF16: native bf16 dot products")
    if kind == "arm-bf16":
        return DtypeChoice("bfloat16", "the Arm CPU has BF16 instructions")
    if kind == "avx512":
        return DtypeChoice(
            "float32", "AVX-512 without BF16: bf16 runs emulated, measured ~3x slower than float32"
        )
    if kind == "avx2":
        return DtypeChoice(
            "float32", "no native bf16 (AVX2 only): bf16 falls back to slow kernels, ~4.6x slower"
        )
    return DtypeChoice("float32", "no native bf16 found on this CPU")


async def measure_decode(backend: Backend, *, batch: int = 8, tokens: int = 16) -> float:
    """A short decode-rate reading: `batch` sampled answers of `tokens` tokens in one request.

    Doubles as the engine's warm-up. Returns output tokens per second (prefill included, so it
    reads a little low; `benchmarks/engine.py` measures properly).
    """
    import time

    from reasoning.backend import Message, Request, Sampling, collect

    request = Request(
        (Message("user", "Write a long story about a lighthouse keeper and a storm."),),
        Sampling(temperature=1.0, max_tokens=tokens, n=batch, seed=0),
    )
    start = time.perf_counter()
    done = await collect(backend, request)
    seconds = time.perf_counter() - start
    return sum(c.output_tokens for c in done) / max(seconds, 1e-9)
