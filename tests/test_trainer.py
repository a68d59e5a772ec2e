"""The offline trainer on CPU: a tiny random Llama for the mechanics, the shipped model on pipeline data."""

from __future__ import annotations

import json
import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sgpo_data.config import TrainConfig
from sgpo_data.errors import SgpoError
from sgpo_data.train import OfflineTrainer, train
from sgpo_data.train.data import length_grouped_batches
from tests.helpers import tiny_model

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def toy_dataset(path, rows):
    """rows: (prompt text, completion text, advantage) in the `trl` view's conversational format."""
    table = pa.table({
        "prompt_id": [f"p{i // 2}" for i in range(len(rows))],
        "sample_idx": pa.array([i % 2 for i in range(len(rows))], pa.int32()),
        "prompt": pa.array([[{"role": "user", "content": r[0]}] for r in rows], MESSAGES),
        "completion": pa.array([[{"role": "assistant", "content": r[1]}] for r in rows], MESSAGES),
        "advantage": pa.array([r[2] for r in rows], pa.float32()),
        "advantage_grpo": pa.array([0.0 for _ in rows], pa.float32()),
    })
    pq.write_table(table, path)
    return str(path)


def response_logprob(trainer: OfflineTrainer, index: int) -> float:
    from sgpo_data.train.trainer import collate, token_logprobs

    batch = collate([trainer.examples[index]], trainer.tokenizer.pad_token_id, trainer.accelerator.device)
    with torch.no_grad():
        logp, _ = token_logprobs(trainer.accelerator.unwrap_model(trainer.model), batch, 1.0)
    return float((logp * batch["mask"]).sum())


def test_the_better_response_gains_probability(tiny, tmp_path):
    data = toy_dataset(tmp_path / "toy.parquet", [("What is 2 + 2?", "2 + 2 = 4. The answer is 4.", 1.0),
                                                   ("What is 2 + 2?", "2 + 2 = 5. The answer is 5.", -1.0)])
    cfg = TrainConfig(data=data, model=tiny, lr=3e-3, batch_size=2, schedule="constant", clip_eps_high=10.0,
                      clip_eps_low=0.99)
    trainer = OfflineTrainer(cfg, tmp_path / "out")
    good, bad = (0, 1) if trainer.examples[0].advantage > 0 else (1, 0)
    before = response_logprob(trainer, good), response_logprob(trainer, bad)
    assert trainer.data.counts["logprobs_from_initial_policy"] == 2  # no behaviour log-probs in this data
    for _ in range(5):
        metrics = trainer.train_step([[0, 1]])
        assert math.isfinite(metrics["loss"])
    after = response_logprob(trainer, good), response_logprob(trainer, bad)
    assert after[0] > before[0] + 1.0
    # shared tokens ("2 + 2 = ", "The answer is") rise with the good response; the gap between them widens
    assert after[0] - after[1] > before[0] - before[1] + 1.0


def test_zero_advantage_rows_alone_in_a_batch_leave_parameters_unchanged(tiny, tmp_path):
    data = toy_dataset(tmp_path / "zero.parquet", [("Q1", "A1", 0.0), ("Q2", "A2", 0.0)])
    with pytest.raises(SgpoError, match="no row left to train on .* all-zero advantages teach nothing"):
        OfflineTrainer(TrainConfig(data=data, model=tiny), tmp_path / "a")
    trainer = OfflineTrainer(TrainConfig(data=data, model=tiny, lr=1e-2, skip_zero_advantage=False), tmp_path / "b")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step([[0, 1]])
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_gives_the_same_next_step_loss(tiny, tmp_path):
    rows = [(f"What is {i} + {i}?", f"The answer is {2 * i + (i % 2)}.", 1.0 if i % 2 == 0 else -1.0) for i in range(8)]
    data = toy_dataset(tmp_path / "toy.parquet", rows)
    cfg = TrainConfig(data=data, model=tiny, lr=1e-3, batch_size=2, epochs=2, save_every=1, warmup_steps=1)
    straight = tmp_path / "straight"
    train(cfg, straight)
    losses = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-000003", resumed / "checkpoint-000003")
    train(cfg, resumed, resume=True)
    again = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in again] == [4, 5, 6, 7, 8]
    assert again[0]["loss"] == pytest.approx(losses[3], rel=1e-5, abs=1e-7)
    assert again[-1]["loss"] == pytest.approx(losses[-1], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("lora", [False, True])
def test_full_and_lora_runs_save_a_model_transformers_loads(tiny, tmp_path, lora):
    from transformers import AutoModelForCausalLM

    data = toy_dataset(tmp_path / "toy.parquet", [("Q", "good", 1.0), ("Q", "bad", -1.0)])
    summary = train(TrainConfig(data=data, model=tiny, lora=lora, lora_r=4, lr=1e-3, batch_size=2, kl_coef=0.1,
                                loss_agg="seq_mean_token_mean", gradient_checkpointing=lora), tmp_path / "out")
    reloaded = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert sum(p.numel() for p in reloaded.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny).parameters())
    assert (tmp_path / "out" / "adapter").is_dir() == lora


def test_pipeline_data_on_the_shipped_model_gives_finite_losses(pipeline_run, tmp_path):
    cfg = TrainConfig(data=str(pipeline_run), batch_size=4, lr=1e-6, lora=True, lora_r=4, loss_agg="dr_grpo",
                      eval={"arithmetic": {"num_problems": 2}, "max_new_tokens": 16})
    trainer = OfflineTrainer(cfg, tmp_path)
    assert trainer.data.counts["logprobs_from_data"] == len(trainer.examples)  # exact tokens + behaviour log-probs
    assert trainer.temperature == 0.8  # read from the run's generate manifest
    first = next(iter(trainer.schedule()))[1]
    metrics = trainer.train_step(first)
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=2e-3)  # the data's log-probs are the policy's own
    assert 0 <= metrics["padding_fraction"] < 1


def test_length_grouped_batches_are_deterministic_and_cover_everything():
    from sgpo_data.train.data import Example

    examples = [Example([1] * (i % 7 + 1), [2] * (i % 5 + 1), 1.0, None) for i in range(50)]
    a = length_grouped_batches(examples, 4, seed=3)
    assert a == length_grouped_batches(examples, 4, seed=3) != length_grouped_batches(examples, 4, seed=4)
    assert sorted(i for b in a for i in b) == list(range(50))


def test_bad_training_data(tiny, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["q"], "completion": ["a"]}), bad)
    with pytest.raises(SgpoError, match="lacks 'advantage'.*export the `trl` or `flat` view"):
        OfflineTrainer(TrainConfig(data=str(bad), model=tiny), tmp_path / "o")
    with pytest.raises(SgpoError, match="not found"):
        OfflineTrainer(TrainConfig(data=str(tmp_path / "missing.parquet"), model=tiny), tmp_path / "o")
    with pytest.raises(SgpoError, match="train.data is not set"):
        train(TrainConfig(model=tiny), tmp_path / "o")
    long = toy_dataset(tmp_path / "long.parquet", [("Q", "word " * 300, 1.0), ("Q", "short", -1.0)])
    trainer = OfflineTrainer(TrainConfig(data=long, model=tiny, max_length=64, overlong="skip"), tmp_path / "s")
    assert trainer.data.counts["overlong_skipped"] == 1 and len(trainer.examples) == 1
    trainer = OfflineTrainer(TrainConfig(data=long, model=tiny, max_length=64, overlong="truncate"), tmp_path / "t")
    assert trainer.data.counts["overlong_truncated"] == 1 and max(e.length for e in trainer.examples) == 64


def test_end_of_turn_closes_only_responses_the_policy_ended_itself(tiny, tmp_path):
    """Without generated token ids the response is re-tokenised: a response that stopped gets the end-of-turn
    token it generated, one cut at the token limit gets none, and without finish_reason nothing is added."""
    from transformers import AutoTokenizer

    from sgpo_data.train.data import load_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    path = toy_dataset(tmp_path / "ends.parquet", [("Q", "Done. The answer is 4.", 1.0), ("Q", "Still going and", -1.0),
                                                    ("Q", "No reason known", 0.5)])
    table = pq.read_table(path)
    pq.write_table(table.append_column("finish_reason", pa.array(["stop", "length", None])), path)
    data = load_examples(path, tokenizer, "sgpo", 1024, "skip")
    eos = tokenizer.eos_token_id
    stopped, cut, unknown = data.examples
    assert stopped.response_ids[-1] == eos and stopped.response_ids[:-1] == tokenizer("Done. The answer is 4.", add_special_tokens=False).input_ids
    assert eos not in cut.response_ids and eos not in unknown.response_ids
    assert data.counts["end_of_turn_appended"] == 1


def test_a_tokenizer_without_chat_template_is_refused(tiny, tmp_path):
    import shutil as sh

    from transformers import AutoTokenizer

    plain = tmp_path / "plain"
    sh.copytree(tiny, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = None
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(plain)
    data = toy_dataset(tmp_path / "toy.parquet", [("Q", "good", 1.0), ("Q", "bad", -1.0)])
    with pytest.raises(SgpoError, match="no chat template"):
        OfflineTrainer(TrainConfig(data=data, model=str(plain)), tmp_path / "o")


def test_runs_unchanged_under_accelerate_launch_with_two_processes(tiny, tmp_path):
    """DDP (gloo on a CPU-only machine, where --multi_gpu runs torchrun): two processes share the batches,
    sync gradients, and write one log and one final model."""
    import subprocess
    import sys

    rows = [(f"What is {i} + 1?", f"The answer is {i + 1}.", 1.0 if i % 2 else -1.0) for i in range(8)]
    data = toy_dataset(tmp_path / "toy.parquet", rows)
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "sgpo_data_cli", "train", "--data", data, "--model", tiny, "--out", str(out),
               "--set", "train.batch_size=2", "--set", "train.lr=1e-3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # 4 batches of 2, shared by 2 processes: 2 steps each, logged once per process
    assert (out / "final" / "config.json").is_file()


# -- log-probs without the full logits, packing, the first step, memory, devices ---------------------------------

ROWS = [("What is 2 + 2?", "2 + 2 = 4. The answer is 4.", 1.0), ("What is 2 + 2?", "It is 5.", -1.0),
        ("What is 3 + 5?", "3 + 5 = 8, so the answer is 8.", 0.5), ("What is 3 + 5?", "The answer is 9.", -0.5),
        ("What is 10 - 4?", "10 - 4 = 6.", 1.0), ("What is 10 - 4?", "10 - 4 = 7, so 7.", -1.0)]


def gradients(model) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_log_probs_through_the_chunked_head_equal_the_full_logits_and_so_do_their_gradients(tiny, tmp_path,
                                                                                           chunk):
    from sgpo_data.train.trainer import output_head, response_logprobs, token_logprobs

    trainer = OfflineTrainer(TrainConfig(data=toy_dataset(tmp_path / "toy.parquet", ROWS), model=tiny),
                             tmp_path / "out")
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.head is output_head(model) is not None  # checked at start: this model's head can be chunked
    batch = trainer._batch(trainer.examples[:4])
    weights = torch.linspace(-1, 1, batch["mask"].numel()).view_as(batch["mask"]) * batch["mask"]
    full, full_entropy = token_logprobs(model, batch, 0.7)
    (full * weights).sum().backward()
    expected = gradients(model)
    fused, entropy = response_logprobs(model, batch, 0.7, chunk, trainer.head)
    (fused * weights).sum().backward()
    mask = batch["mask"].bool()
    assert torch.allclose(fused[mask], full[mask], atol=1e-5, rtol=1e-5) and not fused[~mask].any()
    assert torch.allclose(entropy[mask], full_entropy[mask], atol=1e-5, rtol=1e-5)
    for a, b in zip(gradients(model), expected):  # fp32 sums in another order: equal to 1e-5 of the largest
        assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "dr_grpo"])
def test_a_packed_batch_gives_the_padded_batchs_log_probs_and_loss(tiny, tmp_path, loss_agg):
    from sgpo_data.train.trainer import collate, policy_loss

    cfg = TrainConfig(data=toy_dataset(tmp_path / "toy.parquet", ROWS), model=tiny, loss_agg=loss_agg, kl_coef=0.1)
    trainer = OfflineTrainer(cfg, tmp_path / "out")
    examples, pad = trainer.examples[:4], trainer.tokenizer.pad_token_id
    padded = collate(examples, pad, trainer.accelerator.device)
    packed = collate(examples, pad, trainer.accelerator.device, pack=True)
    assert packed["input_ids"].shape == (1, sum(e.length for e in examples)) and "attention_mask" not in packed
    norm = trainer._norm([list(range(4))])
    with torch.no_grad():
        a, _ = trainer.logprobs(padded)
        b, _ = trainer.logprobs(packed)
        for k in range(4):  # sequence by sequence, the same response log-probs
            assert torch.allclose(a[padded["seq"] == k], b[packed["seq"] == k], atol=1e-5)
        # perturb the log-probs so that the ratios, the clipping and the KL all matter
        loss_a, stats_a = policy_loss(a + 0.3 * padded["mask"], padded, cfg, norm)
        loss_b, stats_b = policy_loss(b + 0.3 * packed["mask"], packed, cfg, norm)
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-5, abs=1e-7)
    assert stats_a == pytest.approx(stats_b, rel=1e-5, abs=1e-7)
    trainer.pack = True  # a training step on packed batches
    assert trainer.train_step([[0, 1], [2, 3]])["padding_fraction"] == 0.0


@pytest.mark.parametrize("pack", [False, True])
def test_the_first_steps_importance_ratio_is_exactly_one(tiny, tmp_path, pack, device):
    """Behaviour log-probs the data lack are computed on the first epoch's own micro-batches, by the same
    computation as the first step's forward, so its ratios are exactly 1 (the data here have none)."""
    cfg = TrainConfig(data=toy_dataset(tmp_path / "toy.parquet", ROWS), model=tiny, batch_size=2, grad_accum=3,
                      kl_coef=0.05, packing="on" if pack else "off", logprob_chunk=7, device=device)
    trainer = OfflineTrainer(cfg, tmp_path / "out")
    assert trainer.accelerator.device.type == device
    assert trainer.data.counts["logprobs_from_initial_policy"] == len(ROWS)
    _, first = next(iter(trainer.schedule()))
    metrics = trainer.train_step(first)  # under bf16 autocast on a GPU
    assert metrics["ratio_min"] == metrics["ratio_max"] == 1.0 and metrics["kl"] == 0.0
    assert metrics["peak_memory_gb" if device == "cuda" else "peak_rss_gb"] > 0  # peak memory of the step


def test_an_out_of_memory_error_names_the_batch_and_the_remedies(tiny, tmp_path, monkeypatch):
    import sgpo_data.train.trainer as module

    trainer = OfflineTrainer(TrainConfig(data=toy_dataset(tmp_path / "toy.parquet", ROWS), model=tiny,
                                         batch_size=2, max_length=512), tmp_path / "out")

    def no_memory(*args, **kwargs):  # fault injection: the allocator gives up mid-forward
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(module, "response_logprobs", no_memory)
    with pytest.raises(SgpoError) as caught:
        trainer.train_step([[0, 1]])
    message = str(caught.value)
    assert "micro-batch of 2 sequences" in message and "train.batch_size 2" in message
    assert "train.max_length 512" in message and "gradient_checkpointing" in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_before_the_model_loads(tiny, tmp_path):
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    data = toy_dataset(tmp_path / "toy.parquet", ROWS)
    with pytest.raises(SgpoError, match="train.device cuda: torch .* sees no CUDA device"):
        OfflineTrainer(TrainConfig(data=data, model=tiny, device="cuda"), tmp_path / "out")
    result = CliRunner().invoke(app, ["train", "--data", data, "--model", tiny, "--device", "cuda",
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "sees no CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_under_the_training_autocast_the_chunked_head_gives_the_full_logits_log_probs(tiny, tmp_path, device):
    from sgpo_data.train.trainer import response_logprobs, token_logprobs

    cfg = TrainConfig(data=toy_dataset(tmp_path / "toy.parquet", ROWS), model=tiny, batch_size=2, device=device)
    trainer = OfflineTrainer(cfg, tmp_path / "out")
    assert trainer.head is not None
    batch = trainer._batch(trainer.examples[:2])
    model = trainer.accelerator.unwrap_model(trainer.model)
    with torch.no_grad(), trainer.accelerator.autocast():  # bf16 on a GPU, nothing on a CPU
        fused = response_logprobs(model, batch, 1.0, 3, trainer.head)[0]
        full = token_logprobs(model, batch, 1.0)[0]
    mask = batch["mask"].bool()
    assert torch.allclose(fused[mask], full[mask], atol=1e-5 if device == "cpu" else 5e-2)
