"""The offline SGPO trainer: policy-gradient steps on pre-generated, pre-scored rollouts.

What it does
------------
Each row is (prompt, response tokens, advantage, behaviour log-probs). For every response token t:

    ratio_t   = exp(logp_t - old_logp_t)                       old = the policy that sampled the data
    pg_t      = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
    kl_t      = exp(ref_t - logp_t) - (ref_t - logp_t) - 1     k3 estimator, ref = the initial policy
    loss      = aggregate(pg_t + kl_coef * kl_t)

A is the row's `advantage` (SGPO) or `advantage_grpo` (the GRPO baseline), computed at scoring time over
the prompt's group. Log-probs use logits / sampling temperature, the convention the data was recorded with.
`aggregate` is a token mean over the optimizer step (`token_mean`), a mean of per-sequence token means
(`seq_mean_token_mean`), or a sum divided by (sequences x longest response), Dr. GRPO's constant normaliser.
The data are offline: several epochs reuse the same rollouts, and the clipped ratio keeps the policy near
the one that generated them. Rows with zero advantage carry no gradient and are dropped before any forward
pass. When the data lack behaviour log-probs (or the exact tokens), they are computed once from the
initial policy before training, and the count is reported.

What it does not do: generate new rollouts (that is `sgpo-data generate`), re-score, or value-model PPO.

Efficiency: length-grouped batches keep padding small; gradient accumulation; bf16 autocast on GPU, fp32 on
CPU; optional gradient checkpointing; LoRA (peft) or full fine-tuning; runs under `accelerate launch`
(each process takes its share of the batches; DDP syncs gradients on the last micro-batch of a step).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch

from sgpo_data.config import TrainConfig
from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.progress import Progress
from sgpo_data.train.data import Example, length_grouped_batches, load_examples, read_training_rows


def collate(examples: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response ids; tensors over predicted positions (input position t predicts t+1)."""
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width - 1))
    old = torch.zeros((len(examples), width - 1))
    ref = torch.zeros((len(examples), width - 1))
    for i, e in enumerate(examples):
        p, r = len(e.prompt_ids), len(e.response_ids)
        ids[i, : p + r] = torch.tensor(e.prompt_ids + e.response_ids)
        attention[i, : p + r] = 1
        mask[i, p - 1 : p + r - 1] = 1  # logits at p-1 predict the first response token
        old[i, p - 1 : p + r - 1] = torch.tensor(e.old_logprobs)
        if e.ref_logprobs is not None:
            ref[i, p - 1 : p + r - 1] = torch.tensor(e.ref_logprobs)
    advantages = torch.tensor([e.advantage for e in examples])
    batch = {"input_ids": ids, "attention_mask": attention, "mask": mask, "old": old, "ref": ref, "adv": advantages}
    return {k: v.to(device) for k, v in batch.items()}


def token_logprobs(model, batch: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token under logits / temperature, and the entropy (no gradient) for metrics."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logits = logits.float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(2, batch["input_ids"][:, 1:].unsqueeze(2)).squeeze(2) - log_norm
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = log_norm - (probs * logits).sum(-1)
    return logp, entropy


def policy_loss(logp, batch: dict, cfg: TrainConfig, norm: dict) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss (+ k3 KL), aggregated with the optimizer step's normaliser `norm`."""
    mask, adv = batch["mask"], batch["adv"].unsqueeze(1)
    ratio = torch.exp(logp - batch["old"])
    clipped = ratio.clamp(1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    # k3 KL to the initial policy; without a KL term it is only reported, measured against the behaviour policy
    delta = (batch["ref"] if cfg.kl_coef else batch["old"]) - logp
    kl = torch.exp(delta) - delta - 1
    if cfg.kl_coef:
        per_token = per_token + cfg.kl_coef * kl
    if cfg.loss_agg == "token_mean":
        loss = (per_token * mask).sum() / norm["tokens"]
    elif cfg.loss_agg == "seq_mean_token_mean":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / norm["sequences"]
    else:  # dr_grpo: a constant normaliser, no length bias
        loss = (per_token * mask).sum() / (norm["sequences"] * norm["max_response"])
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        is_clipped = ((ratio < 1 - cfg.clip_eps_low) & (adv < 0)) | ((ratio > 1 + cfg.clip_eps_high) & (adv > 0))
        stats = {
            "ratio_mean": float((ratio * mask).sum() / n),
            "ratio_min": float(ratio[mask.bool()].min()) if mask.any() else 1.0,
            "ratio_max": float(ratio[mask.bool()].max()) if mask.any() else 1.0,
            "clip_fraction": float((is_clipped.float() * mask).sum() / n),
            "kl": float((kl * mask).sum() / n),
        }
    return loss, stats


class OfflineTrainer:
    def __init__(self, cfg: TrainConfig, out: str | Path, progress: Progress | None = None,
                 rows: tuple | None = None):
        from accelerate import Accelerator

        from sgpo_data.backends.models import load_model

        self.cfg, self.out, self.progress = cfg, Path(out), progress or Progress()
        cuda = torch.cuda.is_available()
        self.accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
        torch.manual_seed(cfg.seed)
        model, self.tokenizer, self.model_name, _ = load_model(cfg.model, str(self.accelerator.device), "float32")
        context = getattr(model.config, "max_position_embeddings", None) or cfg.max_length
        self.data = load_examples(cfg.data or "", self.tokenizer, cfg.advantage, min(cfg.max_length, context),
                                  cfg.overlong, cfg.skip_zero_advantage, cfg.hub_config, rows)
        self.temperature = cfg.temperature or self.data.temperature or 1.0
        self.examples = self.data.examples
        self._fill_initial_logprobs(model)  # before any update: the initial policy is the reference
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                     target_modules=cfg.lora_target_modules))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if cfg.lora:
                model.enable_input_require_grads()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.epoch_batches = []
        for epoch in range(cfg.epochs):
            batches = length_grouped_batches(self.examples, cfg.batch_size, cfg.seed + epoch)
            batches = batches[: len(batches) // world * world] or batches  # equal shares across processes
            self.epoch_batches.append(batches[rank::world])
        self.steps_per_epoch = math.ceil(len(self.epoch_batches[0]) / cfg.grad_accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.max_response = max(len(e.response_ids) for e in self.examples)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        from transformers import get_scheduler

        scheduler = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=cfg.warmup_steps,
                                  num_training_steps=self.total_steps)
        # the scheduler stays outside `prepare` (which would step it once per process): each process already
        # counts only its own steps; it is still saved and restored with checkpoints
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.step = 0

    @torch.no_grad()
    def _fill_initial_logprobs(self, model) -> None:
        """Behaviour log-probs the data lack, and reference log-probs for the KL term, from the initial policy."""
        missing = {id(e) for e in self.examples if e.old_logprobs is None}
        todo = self.examples if self.cfg.kl_coef else [e for e in self.examples if id(e) in missing]
        model.eval()
        for start in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[start : start + self.cfg.batch_size]
            for e in chunk:  # collate wants old log-probs; placeholders, replaced below
                e.old_logprobs = e.old_logprobs or [0.0] * len(e.response_ids)
            batch = collate(chunk, self.tokenizer.pad_token_id, self.accelerator.device)
            logp, _ = token_logprobs(model, batch, self.temperature)
            for i, e in enumerate(chunk):
                values = logp[i][batch["mask"][i].bool()].tolist()
                if id(e) in missing:
                    e.old_logprobs = values
                if self.cfg.kl_coef:
                    e.ref_logprobs = values
        model.train()

    def _norm(self, micro_batches: list[list[int]]) -> dict:
        rows = [self.examples[i] for mb in micro_batches for i in mb]
        return {"tokens": max(1, sum(len(e.response_ids) for e in rows)), "sequences": len(rows),
                "max_response": self.max_response}

    def train_step(self, micro_batches: list[list[int]]) -> dict:
        """One optimizer step over `grad_accum` micro-batches (lists of example indices)."""
        started = time.perf_counter()
        norm, totals, real, padded = self._norm(micro_batches), {}, 0, 0
        self.model.train()
        for j, mb in enumerate(micro_batches):
            batch = collate([self.examples[i] for i in mb], self.tokenizer.pad_token_id, self.accelerator.device)
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
            with sync, self.accelerator.autocast():
                logp, entropy = token_logprobs(self.model, batch, self.temperature)
                loss, stats = policy_loss(logp, batch, self.cfg, norm)
            self.accelerator.backward(loss)
            stats["loss"] = float(loss.detach())
            stats["entropy"] = float((entropy * batch["mask"]).sum() / batch["mask"].sum().clamp(min=1))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + (value if key == "loss" else value / len(micro_batches))
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - started
        return {"step": self.step, **totals, "grad_norm": float(grad_norm), "lr": lr,
                "tokens_per_s": real / elapsed, "padding_fraction": 1 - real / padded, "step_time_s": elapsed}

    # -- checkpoints -----------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        path = self.out / f"checkpoint-{self.step:06d}"
        self.accelerator.save_state(str(path))  # model, optimizer, scheduler, RNG states
        if self.accelerator.is_main_process:
            (path / "trainer_state.json").write_text(json.dumps({"step": self.step}))
        return path

    def resume(self) -> bool:
        checkpoints = sorted(self.out.glob("checkpoint-*/trainer_state.json"))
        if not checkpoints:
            return False
        self.accelerator.load_state(str(checkpoints[-1].parent))
        self.step = json.loads(checkpoints[-1].read_text())["step"]
        return True

    def save_final(self) -> Path:
        """A normal Hugging Face folder (LoRA merged into the weights) that transformers and vLLM load."""
        final = self.out / "final"
        model = self.accelerator.unwrap_model(self.model)
        # gathered on every process (FSDP shards the weights), written by the main one
        state = None if self.cfg.lora else self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            if self.cfg.lora:
                model.save_pretrained(self.out / "adapter")
                model = model.merge_and_unload()
            model.save_pretrained(final, state_dict=state)
            self.tokenizer.save_pretrained(final)
        self.accelerator.wait_for_everyone()
        return final

    # -- the loop --------------------------------------------------------------------------------------------

    def schedule(self):
        """(epoch, the step's micro-batches) for every optimizer step, in order."""
        for epoch, batches in enumerate(self.epoch_batches):
            for start in range(0, len(batches), self.cfg.grad_accum):
                yield epoch, batches[start : start + self.cfg.grad_accum]

    def fit(self, resume: bool = False) -> dict:
        from sgpo_data.train.evaluate import evaluate

        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        main = self.accelerator.is_main_process
        log = (self.out / "metrics.jsonl").open("a") if main else None  # one log, from the main process
        evals = []
        if self.cfg.eval.num_problems and self.step == 0:
            evals.append({"step": 0, **evaluate(self, self.cfg.eval)})
        task = self.progress.task("train", total=self.total_steps)
        self.progress.advance(task, self.step)
        for n, (epoch, micro_batches) in enumerate(self.schedule()):
            if n < self.step:
                continue  # done before the checkpoint we resumed from
            metrics = {"epoch": epoch, **self.train_step(micro_batches)}
            if log:
                log.write(json.dumps(metrics) + "\n")
                log.flush()
            self.progress.advance(task, 1)
            self.progress.info(task, f"loss {metrics['loss']:.4f}  kl {metrics['kl']:.4f}  "
                                     f"clip {metrics['clip_fraction']:.3f}  lr {metrics['lr']:.2e}")
            if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                self.save_checkpoint()
            if self.cfg.eval.num_problems and self.cfg.eval.every and self.step % self.cfg.eval.every == 0:
                evals.append({"step": self.step, **evaluate(self, self.cfg.eval)})
        if log:
            log.close()
        self.save_checkpoint()
        final = self.save_final()
        if self.cfg.eval.num_problems and (not evals or evals[-1]["step"] != self.step):
            evals.append({"step": self.step, **evaluate(self, self.cfg.eval)})
        summary = {"model": self.model_name, "final_model": str(final), "steps": self.step,
                   "examples": len(self.examples), "temperature": self.temperature, "data": self.data.counts,
                   "evaluations": evals, "config": self.cfg.model_dump()}
        if self.accelerator.is_main_process:
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: Progress | None = None) -> dict:
    if not cfg.data:
        raise SgpoError("train.data is not set; pass --data RUN_FOLDER (or Parquet files / a Hub dataset id)")
    rows = read_training_rows(cfg.data, cfg.advantage, cfg.hub_config)  # a wrong --data fails before the model loads
    return OfflineTrainer(cfg, out, progress, rows).fit(resume=resume)
