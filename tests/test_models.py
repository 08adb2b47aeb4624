import hashlib
import sys
from pathlib import Path

import pytest

from reasoning import ConfigError, ModelError
from reasoning.engine import models
from reasoning.engine.models import EmbeddedModel, ensure_embedded, resolve_model


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EmbeddedModel, bytes]:
    chunks = [b"GGUF-part-one|", b"part-two"]
    for i, chunk in enumerate(chunks, 1):
        package = tmp_path / "site" / f"fakemodelpart{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part0{i}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("REASONING_CACHE", str(tmp_path / "cache"))
    data = b"".join(chunks)
    spec = EmbeddedModel(
        name="fake-model",
        upstream="none/fake",
        packages=("fakemodelpart1", "fakemodelpart2"),
        distribution="fake-parts",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    return spec, data


def test_assembles_verifies_converts_once_and_reuses(parts, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, data = parts
    converted = []

    def fake_convert(gguf: Path, out: Path, progress: object) -> None:
        assert gguf.read_bytes() == data
        out.mkdir()
        (out / "config.json").write_text("{}")
        converted.append(out)

    monkeypatch.setattr(models, "_convert", fake_convert)
    phases = []
    folder = ensure_embedded(spec, lambda phase, done, total: phases.append((phase, done, total)))
    assert (folder / "config.json").is_file() and not (folder / "model.gguf").exists()
    assert phases[-1] == ("assemble", len(data), len(data))
    assert ensure_embedded(spec) == folder
    assert len(converted) == 1


def test_corrupt_parts_are_refused(parts, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, _ = parts
    bad = EmbeddedModel(**{**spec.__dict__, "sha256": "0" * 64})
    monkeypatch.setattr(models, "_convert", lambda *a: pytest.fail("must not convert"))
    with pytest.raises(ModelError, match="expected .* reinstall the parts"):
        ensure_embedded(bad)


def test_missing_part_package_says_what_to_install(parts) -> None:
    spec, _ = parts
    missing = EmbeddedModel(**{**spec.__dict__, "packages": ("fakemodelpart1", "nosuchpart9")})
    with pytest.raises(ModelError, match="run: pip install fake-parts"):
        ensure_embedded(missing)


def test_resolve_model_paths_and_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_model("./nowhere")
    with pytest.raises(ConfigError, match="holds no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model("someorg/some-model") == "someorg/some-model"


def test_embedded_models_are_registered_with_pinned_hashes() -> None:
    assert models.DEFAULT_MODEL in models.EMBEDDED_MODELS
    for spec in models.EMBEDDED_MODELS.values():
        assert len(spec.sha256) == 64 and spec.size > 10**8
    assert models.embedded("1.5B") is models.EMBEDDED_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert "fakemodelpart1" not in sys.modules
