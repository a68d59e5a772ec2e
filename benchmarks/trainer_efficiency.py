"""Trainer efficiency: one optimizer step of the offline trainer against a bare step of the same model on the same
batches (forward under the trainer's autocast, cross-entropy on the response tokens, backward, AdamW), with
tokens/s, model FLOP utilisation where the peak is known, peak memory and the padding of the batches.

    python benchmarks/trainer_efficiency.py --data runs/demo [--batch-size 4] [--steps 3] [--lora]
    python benchmarks/trainer_efficiency.py --synthetic 256 --response-tokens 1000 --random 321m \\
        --batch-size 16 [--gradient-checkpointing] [--json out.json]

`--synthetic N`: N rows of random response tokens (about `--response-tokens` each, exact ids, no behaviour
log-probs, so the trainer computes them first), nothing read from disk. `--random SIZE`: a randomly initialised
Llama of that size with the shipped model's tokenizer (nothing downloaded). Prints figures; asserts nothing.
Targets: trainer / bare step time >= 0.95 on a GPU, padding < 10 %.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sgpo_data.config import TrainConfig
from sgpo_data.train.trainer import OfflineTrainer, collate

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def synthetic_rows(folder: Path, rows: int, response_tokens: int, vocab: int) -> str:
    rng = random.Random(0)
    ids = [[rng.randrange(100, vocab) for _ in range(int(response_tokens * rng.uniform(0.9, 1.1)))]
           for _ in range(rows)]
    table = pa.table({
        "prompt_id": [f"p{i // 8}" for i in range(rows)], "sample_idx": [i % 8 for i in range(rows)],
        "problem": [f"Problem {i // 8}: add the numbers step by step." for i in range(rows)],
        "response": ["" for _ in range(rows)], "response_token_ids": ids,
        "advantage": [rng.choice([-1.0, -0.5, 0.5, 1.0]) for _ in range(rows)],
        "advantage_grpo": [0.0] * rows})
    path = folder / "synthetic.parquet"
    pq.write_table(table, path)
    return str(path)


def random_model(folder: Path, size: str) -> str:
    from transformers import AutoTokenizer, LlamaForCausalLM

    from transformers_generate import load  # one definition of the sizes (this folder is on sys.path)
    from sgpo_data.backends.models import resolve_model

    model, _ = load(size, "cpu", torch.float32)
    path = folder / f"llama-{size}"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_model(None)[0]).save_pretrained(path)
    assert isinstance(model, LlamaForCausalLM)
    return str(path)


def bare_step(trainer: OfflineTrainer, indices: list[int]) -> float:
    """Forward (the trainer's autocast) + next-token cross-entropy on the response tokens + backward + step."""
    batch = collate([trainer.examples[i] for i in indices], trainer.tokenizer.pad_token_id, trainer.accelerator.device)
    sync()
    started = time.perf_counter()
    with trainer.accelerator.autocast():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["input_ids"][:, 1:].flatten(),
                                                 reduction="none")
        loss = (loss * batch["mask"].flatten()).sum() / batch["mask"].sum()
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - started


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/demo")
    parser.add_argument("--synthetic", type=int, default=0, help="rows of random tokens instead of --data")
    parser.add_argument("--response-tokens", type=int, default=1000)
    parser.add_argument("--random", default=None, help="a random Llama of this size (135m, 321m)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sgpo-bench-trainer-"))
    model = random_model(folder, args.random) if args.random else None
    data = args.data
    if args.synthetic:
        from transformers import AutoConfig

        from sgpo_data.backends.models import resolve_model

        vocab = AutoConfig.from_pretrained(model or resolve_model(None)[0]).vocab_size
        data = synthetic_rows(folder, args.synthetic, args.response_tokens, vocab)
    cfg = TrainConfig(data=data, model=model, batch_size=args.batch_size, lora=args.lora, lr=1e-6,
                      max_length=int(args.response_tokens * 1.2) + 128 if args.synthetic else 2048,
                      gradient_checkpointing=args.gradient_checkpointing)
    trainer = OfflineTrainer(cfg, folder / "out")
    batches = [mb for _, step in trainer.schedule() for mb in step]
    real = sum(trainer.examples[i].length for b in batches for i in b)
    padded = sum(len(b) * max(trainer.examples[i].length for i in b) for b in batches)
    cuda = trainer.accelerator.device.type == "cuda"
    device = torch.cuda.get_device_name() if cuda else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in trainer.model.parameters())
    mode = "LoRA" if args.lora else "full" + (", gradient checkpointing" if args.gradient_checkpointing else "")
    print(f"device: {device}; {params / 1e6:.0f}M parameters; examples {len(trainer.examples)}; batches "
          f"{len(batches)} of {args.batch_size}; {mode}; packing {'on' if getattr(trainer, 'pack', False) else 'off'}")
    first = trainer.train_step([batches[0]])  # before any bare step changes the weights
    ratios = [first["ratio_min"], first["ratio_max"]]
    bare, full, tokens = [], [], []
    bare_peak = trainer_peak = None
    for indices in batches[1 : args.steps + 2]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        bare.append(bare_step(trainer, indices))
        bare_peak = max(bare_peak or 0.0, peak_gb() or 0.0) if cuda else None
        metrics = trainer.train_step([indices])
        full.append(metrics["step_time_s"])
        tokens.append(metrics["tokens_per_s"])
        trainer_peak = max(trainer_peak or 0.0, metrics.get("peak_memory_gb", 0.0)) if cuda else None
    bare, full = statistics.median(bare[1:]), statistics.median(full[1:])  # the first step warms up
    tokens_per_s = statistics.median(tokens[1:])
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None) if cuda else None
    mfu = 6 * params * tokens_per_s / (peak * 1e12) if peak and not args.lora else None
    figures = {"device": device, "parameters": params, "mode": mode, "batch_size": args.batch_size,
               "padding_fraction": 1 - real / padded, "bare_step_s": bare, "trainer_step_s": full,
               "trainer_over_bare": bare / full, "tokens_per_s": tokens_per_s, "mfu": mfu,
               "peak_memory_gb": trainer_peak, "bare_peak_memory_gb": bare_peak,
               "first_step_ratio": [ratios[0], ratios[1]]}
    print(f"padding fraction over all batches: {figures['padding_fraction']:.1%}")
    print(f"bare step: {bare:.3f} s; trainer step: {full:.3f} s; trainer / bare speed: {bare / full:.2f}x")
    print(f"trainer tokens/s (non-pad): {tokens_per_s:.0f}" + (f"; model FLOP utilisation {mfu:.1%} of {peak:.0f} "
                                                                f"TFLOP/s" if mfu else ""))
    if cuda:
        print(f"peak memory: trainer {trainer_peak:.1f} GB, bare {bare_peak:.1f} GB")
    print(f"first step's importance ratio: {ratios[0]:.6f} .. {ratios[1]:.6f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
