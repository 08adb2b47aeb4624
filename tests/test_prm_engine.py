"""A process reward model on vLLM's pooling runner: a tiny random Qwen2ForProcessRewardModel built
for the test (Qwen2.5-Math-PRM's layout and step tag), served on CPU, checked against torch."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reasoning import ConfigError, Controller, Message, Problem, Request
from reasoning.strategies import BeamSearch
from reasoning.verifiers.process import QWEN_PRM_SYSTEM

pytestmark = pytest.mark.engine

STEP_TAG, STEP_TAG_ID, HIDDEN = "<extra_0>", 151651, 64
PROBLEM = Problem("p", "A box holds 6 eggs. How many eggs are in 4 boxes?", answer="24")


def build_tiny_prm(out: Path, tokenizer_dir: Path):
    """Write a random 2-layer PRM folder; return (body, head) torch modules with its weights.

    The tokenizer is the default model's, with id 151651 renamed to ``<extra_0>`` as in
    Qwen2.5-Math-PRM's own tokenizer; weights are float32 so vLLM and torch agree closely.
    """
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    out.mkdir(parents=True)
    tokenizer = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    [slot] = [t for t in tokenizer["added_tokens"] if t["id"] == STEP_TAG_ID]
    vocab = tokenizer["model"]["vocab"]
    vocab.pop(slot["content"], None)
    vocab[STEP_TAG] = STEP_TAG_ID
    slot.update(content=STEP_TAG, special=True)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    shape = {
        "vocab_size": 151936,
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head_dim 32: the CPU attention kernels need >= 32
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    config = {
        "architectures": ["Qwen2ForProcessRewardModel"],
        "model_type": "qwen2",
        "num_labels": 2,
        **shape,
    }
    # (transformers_version: without it transformers warns about a Mistral tokenizer regex)
    config |= {"torch_dtype": "float32", "transformers_version": transformers.__version__}
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.manual_seed(0)
    body = Qwen2Model(Qwen2Config(**shape)).float().eval()
    with torch.no_grad():  # wider than the default init, so rewards differ visibly between steps
        for name, p in body.named_parameters():
            p.copy_(
                torch.randn_like(p)
                * (1.0 if "embed" in name else 0.1 if p.dim() == 1 else p.shape[-1] ** -0.5)
            )
            if name.endswith("norm.weight"):
                p.add_(1.0)
    head = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 2))
    with torch.no_grad():
        head[2].weight.mul_(8.0)
    tensors = {f"model.{k}": v for k, v in body.state_dict().items() if "rotary" not in k}
    tensors |= {f"score.{k}": v for k, v in head.state_dict().items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    return body, head.eval()


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    from reasoning.backends.vllm_reward import VLLMRewardBackend
    from reasoning.engine.models import resolve_model

    folder = tmp_path_factory.mktemp("prm") / "tiny-prm"
    body, head = build_tiny_prm(folder, Path(resolve_model(None)))
    backend = VLLMRewardBackend.load(str(folder), dtype="float32", kv_cache_gb=0.1, max_model_len=2048)
    yield backend, body, head
    backend.close()


def conversation(steps):
    return (
        Message("system", QWEN_PRM_SYSTEM),
        Message("user", PROBLEM.question),
        Message("assistant", "".join(s + STEP_TAG for s in steps)),
    )


async def test_step_rewards_match_the_models_forward_pass(prm) -> None:
    import torch

    backend, body, head = prm
    steps = ["Each box holds 6 eggs.", "4 boxes hold 4 * 6 = 24 eggs.", "The answer is \\boxed{24}."]
    request = Request(conversation(steps))
    rewards = await backend.step_rewards(request)
    assert rewards.shape == (3, 2) and np.allclose(rewards.sum(axis=1), 1.0, atol=1e-5)
    ids = backend._tokenizer.encode(backend.render(request), add_special_tokens=False)
    assert ids.count(STEP_TAG_ID) == 3
    with torch.no_grad():
        logits = head(body(torch.tensor([ids])).last_hidden_state)[0]
    expected = torch.softmax(logits[torch.tensor(ids) == STEP_TAG_ID], dim=-1).numpy()
    assert rewards == pytest.approx(expected, abs=1e-3)
    assert np.ptp(rewards[:, 1]) > 1e-3  # the steps are told apart


async def test_beam_search_scores_steps_with_the_served_prm(engine, prm) -> None:
    backend = prm[0]
    controller = Controller({"policy": engine, "prm": backend}, seed=5)
    run = await controller.run(PROBLEM, BeamSearch(n=2, width=2, step_tokens=24, max_steps=2, scorer="prm"))
    scored = [c for c in run.candidates if "step_score" in c.scores]
    assert run.stop_reason in ("done", "no_answer") and scored  # ran its course
    # The recorded score of a first step is the PRM's own reward for that one-step path.
    first = next(c for c in scored if c.scores["step"] == 1)
    direct = await backend.step_rewards(Request(conversation([first.text])))
    assert first.scores["step_score"] == pytest.approx(float(direct[-1, 1]), abs=1e-4)
    assert run.usage_by_backend["prm"]["calls"] == len(scored)
    assert run.usage_by_backend["prm"]["prompt_tokens"] > 50 * len(scored)  # the PRM's prefill is counted
    assert run.usage_by_backend["prm"]["output_tokens"] == 0


def test_a_step_tag_of_several_tokens_is_refused(prm) -> None:
    from reasoning.backends.vllm_reward import VLLMRewardBackend

    with pytest.raises(ConfigError, match="one token"):
        VLLMRewardBackend.load(str(Path(prm[0].model)), step_tag="<step end>")
