"""The README's Python example runs (with the scripted backend in place of the engine)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs() -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    source = code.group(1).replace(
        "from reasoning.backends.vllm_local import VLLMBackend",
        "from reasoning import ScriptedBackend as _Scripted\n"
        "class VLLMBackend:\n"
        "    @staticmethod\n"
        "    def load():\n"
        "        import contextlib\n"
        "        return contextlib.nullcontext(_Scripted(['so \\\\boxed{391}']))",
    )
    out = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["391", "done"]


def test_readme_opens_with_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks[0].strip().startswith("./install.sh && .venv/bin/reasoning solve")
    assert blocks[1].strip() == "./install.sh && .venv/bin/python -m pytest"
    assert blocks[1].strip() in (README.parent / ".ci" / "run").read_text()
