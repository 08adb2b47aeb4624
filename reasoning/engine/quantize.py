"""W8A8 int8 copies of HF model folders, in the compressed-tensors format vLLM loads.

Prototype (issue 29): vLLM's CPU backend runs compressed-tensors ``int-quantized`` checkpoints
with int8 weights (symmetric, one scale per output channel) and int8 activations (symmetric,
one scale per token, computed at run time) through `CPUInt8ScaledMMLinearKernel`: the AMX
"sgl" kernel (``int8_scaled_mm_with_quant``) on x86 with AMX when every K is a multiple of 32
and every N of 16, else oneDNN. `quantize_w8a8` writes such a copy of a bf16 folder by
round-to-nearest, no calibration: every linear layer of the decoder (q/k/v/o, gate/up/down)
gets ``weight`` int8 [N, K] and ``weight_scale`` float32 [N, 1] with
``scale = max|w_row| / 127``; the embeddings, norms, biases and ``lm_head`` stay as they are.
Nothing is random, so the same input gives the same bytes (the marker records their sha256).

Example:
    >>> scheme_config()["config_groups"]["group_0"]["weights"]["strategy"]
    'channel'
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from reasoning.engine.models import cache_dir, resolve_model

__all__ = ["LINEAR_SUFFIXES", "MARKER", "kernel_counts", "quantize_w8a8", "scheme_config", "w8a8_model"]

LINEAR_SUFFIXES = tuple(
    f"{part}.weight" for part in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
)
"""Weights quantised: the decoder's linear layers (``lm_head`` and embeddings are left alone)."""
MARKER = "reasoning-w8a8.json"


def scheme_config() -> dict[str, Any]:
    """config.json's ``quantization_config``: W8A8 int8, per-channel weights, per-token activations."""
    args = {"num_bits": 8, "type": "int", "symmetric": True, "group_size": None, "actorder": None}
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {**args, "strategy": "channel", "dynamic": False, "observer": "minmax"},
                "input_activations": {**args, "strategy": "token", "dynamic": True, "observer": None},
                "output_activations": None,
            }
        },
    }


def kernel_counts(model: Any) -> dict[str, int]:
    """How many of a loaded vLLM model's int8 layers run on each kernel: ``sgl`` (AMX) or ``onednn``.

    For ``LLM.apply_model``, which pickles it by reference into vLLM's worker process (so it
    lives in an importable module, not a script).
    """
    counts: dict[str, int] = {}
    for module in model.modules():
        kernel = getattr(getattr(module, "scheme", None), "kernel", None)
        method = getattr(kernel, "linear_method", None)
        if method is not None:
            name = "sgl" if "sgl" in method.__name__ else "onednn"
            counts[name] = counts.get(name, 0) + 1
    return counts


def quantize_w8a8(source: Path, target: Path) -> str:
    """Write a W8A8 copy of the bf16 HF folder `source` into `target`; return its weights' sha256."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(source.glob("*.safetensors")):
        tensors.update(load_file(file))
    out: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):
        weight = tensors[name]
        if not name.endswith(LINEAR_SUFFIXES) or name.startswith("lm_head"):
            out[name] = weight.contiguous()
            continue
        w = weight.float()
        scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
        out[name] = torch.round(w / scale).clamp(-128, 127).to(torch.int8).contiguous()
        out[name.removesuffix("weight") + "weight_scale"] = scale.contiguous()
    target.mkdir(parents=True, exist_ok=True)
    save_file(out, str(target / "model.safetensors"), metadata={"format": "pt"})
    for file in source.iterdir():
        skip = (
            file.suffix == ".safetensors" or file.name == "config.json" or file.name.startswith("reasoning-")
        )
        if file.is_file() and not skip:
            shutil.copy2(file, target / file.name)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = scheme_config()
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    digest = hashlib.sha256()
    with (target / "model.safetensors").open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def w8a8_model(model: str | None = None, root: Path | None = None) -> str:
    """The W8A8 folder of `model` (default: the embedded default), converted on first use.

    It lives in ``<root or cache_dir()>/models-w8a8/<folder name>``, never in the repository,
    and is rebuilt when the source folder's config or weights change (their sizes and times).
    """
    source = Path(resolve_model(model))
    stamp = json.dumps(
        [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(source.iterdir()) if f.is_file()]
    )
    target = (root or cache_dir() / "models-w8a8") / source.name
    marker = target / MARKER
    try:
        if json.loads(marker.read_text()).get("source") == stamp:
            return str(target)
    except (OSError, ValueError):
        pass
    work = target.with_name(f".{target.name}.work")
    shutil.rmtree(work, ignore_errors=True)
    sha = quantize_w8a8(source, work)
    (work / MARKER).write_text(json.dumps({"source": stamp, "scheme": "w8a8-int8-rtn", "sha256": sha}))
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return str(target)
