import math
import shutil

import pytest

from sgpo_data.backends import SamplingParams, get_backend
from sgpo_data.backends.models import default_gguf, resolve_model
from sgpo_data.errors import SgpoError

CONVERSATIONS = [
    [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}],
    [{"role": "user", "content": "What is 6 times 7?"}],
]


def test_generate_shapes_logprobs_and_seed(smollm2):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=7)
    groups = smollm2.generate(CONVERSATIONS, params)
    assert [len(g) for g in groups] == [3, 3]
    for completion in (c for g in groups for c in g):
        assert completion.finish_reason in {"stop", "length"}
        assert 1 <= completion.num_tokens <= 24
        assert len(completion.logprobs) == completion.num_tokens
        assert all(math.isfinite(x) and x <= 0 for x in completion.logprobs)
        if completion.finish_reason == "length":
            assert completion.num_tokens == 24
    assert smollm2.generate(CONVERSATIONS, params) == groups  # same seed, same batch: same samples
    other = smollm2.generate(CONVERSATIONS, SamplingParams(n=3, temperature=1.0, max_new_tokens=24, seed=8))
    assert other != groups


def test_logprobs_match_a_teacher_forced_pass(transformers_on, device):
    """The recorded behaviour log-probs equal a fresh forward pass over prompt + the recorded tokens."""
    import torch

    smollm2 = transformers_on(device)
    completion = smollm2.generate(CONVERSATIONS[:1], SamplingParams(n=1, temperature=0.7, max_new_tokens=16, seed=1))[0][0]
    assert len(completion.token_ids) == completion.num_tokens
    prompt = smollm2.tokenizer(smollm2._prompt_text(CONVERSATIONS[0]), add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + completion.token_ids], device=smollm2.model.device)
    with torch.inference_mode():
        logits = smollm2.model(ids).logits[0, len(prompt) - 1 : -1].float()
    expected = torch.log_softmax(logits / 0.7, -1).gather(1, ids[0, len(prompt) :].unsqueeze(1)).squeeze(1)
    tolerance = 1e-3 if device == "cpu" else 5e-2  # bf16 on a GPU: the cached decode and one pass round apart
    assert torch.allclose(expected.cpu(), torch.tensor(completion.logprobs), atol=tolerance)


def test_choose_returns_the_likely_answer(smollm2):
    question = [{"role": "user", "content": "Reply with the capital of France, one word."}]
    assert smollm2.choose([question], [["Banana", "Paris", "Seventeen"]]) == [1]
    picks = smollm2.choose([CONVERSATIONS[1]] * 2, [["-1", "0", "1"], ["42", "13"]])
    assert picks[0] in {0, 1, 2} and picks[1] in {0, 1}


def test_unknown_backend_lists_valid_names():
    with pytest.raises(SgpoError, match="unknown backend 'nope'; valid names: openai, transformers"):
        get_backend("nope")


def test_model_resolution_errors(tmp_path):
    with pytest.raises(SgpoError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(SgpoError, match="has no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(SgpoError, match="not found"):
        resolve_model("./no/such/folder")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct",) * 2


@pytest.mark.slow
def test_gguf_conversion_is_shared_by_every_copy_of_the_file(tmp_path):
    # Keyed by content: a second virtual environment (a fresh clone, a CI run) reuses the conversion.
    original = default_gguf()
    copy = tmp_path / "elsewhere" / original.name
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    assert resolve_model(str(copy))[0] == resolve_model(None)[0]
