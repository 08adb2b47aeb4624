import subprocess
import sys

import reasoning


def test_public_names_are_sorted_and_importable() -> None:
    names = reasoning.__all__
    assert sorted(names, key=lambda n: (not n.isupper(), n)) == names or len(set(names)) == len(names)
    for name in names:
        assert hasattr(reasoning, name), name


def test_import_reasoning_does_not_import_vllm_or_torch() -> None:
    code = (
        "import sys, reasoning, reasoning.strategies, reasoning.evals.cli; "
        "print(any(m in sys.modules for m in ('vllm', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_nothing_shadows_generic_top_level_names() -> None:
    import importlib.util

    for name in ("strategies", "verifiers", "probes", "evals"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "reasoning" not in str(spec.origin), name
