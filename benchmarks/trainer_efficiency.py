"""Trainer efficiency: one optimizer step of the offline trainer against a bare forward+backward of the same
model on the same tokens, plus the padding fraction of its batches on a dataset, and tokens/s.

    python benchmarks/trainer_efficiency.py --data runs/demo [--batch-size 4] [--steps 3] [--lora]

Prints figures; asserts nothing. Target: efficiency (bare time / trainer time) >= 0.9, padding < 10%.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sgpo_data.config import TrainConfig
from sgpo_data.train.trainer import OfflineTrainer, collate


def bare_step(trainer: OfflineTrainer, indices: list[int]) -> float:
    """Forward + backward + optimizer step with a plain next-token loss on the same padded batch."""
    batch = collate([trainer.examples[i] for i in indices], trainer.tokenizer.pad_token_id, trainer.accelerator.device)
    started = time.perf_counter()
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["input_ids"][:, 1:].flatten(),
                                             reduction="none")
    (loss * batch["mask"].flatten()).sum().backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="runs/demo")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora", action="store_true")
    args = parser.parse_args()
    cfg = TrainConfig(data=args.data, batch_size=args.batch_size, lora=args.lora, max_length=2048, lr=1e-6)
    trainer = OfflineTrainer(cfg, "/tmp/sgpo-bench-trainer")
    batches = [mb for _, step in trainer.schedule() for mb in step]
    real = sum(trainer.examples[i].length for b in batches for i in b)
    padded = sum(len(b) * max(trainer.examples[i].length for i in b) for b in batches)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {device}; examples {len(trainer.examples)}; batches {len(batches)} of {args.batch_size}; "
          f"{'LoRA' if args.lora else 'full'} fine-tuning")
    print(f"padding fraction over all batches: {1 - real / padded:.1%}")
    bare, full, tokens = [], [], []
    for indices in batches[: args.steps + 1]:
        bare.append(bare_step(trainer, indices))
        metrics = trainer.train_step([indices])
        full.append(metrics["step_time_s"])
        tokens.append(metrics["tokens_per_s"])
    bare, full = bare[1:], full[1:]  # the first step warms up allocators and caches
    print(f"bare forward+backward+step: {statistics.median(bare):.2f} s; trainer step: {statistics.median(full):.2f} s")
    print(f"efficiency (bare / trainer): {statistics.median(bare) / statistics.median(full):.2f}  (target >= 0.9)")
    print(f"trainer tokens/s (non-pad): {statistics.median(tokens[1:]):.0f}")


if __name__ == "__main__":
    main()
