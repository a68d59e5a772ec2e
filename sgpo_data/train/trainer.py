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

Efficiency: log-probs come from the model's final hidden states at the response positions only, through the
output layer chunk by chunk (`logprob_chunk` positions at a time, recomputed in the backward pass), so the
full-vocabulary logits are never held in fp32, and the entropy comes from the same pass. Batches are
length-grouped, so padding stays small; with flash attention they are packed instead (one row, no padding,
`position_ids` restarting per sequence: varlen attention). Missing behaviour and reference log-probs are
computed on the first epoch's own micro-batches, under the same autocast as training, so the first step's
importance ratio is exactly 1. Gradient accumulation; bf16 autocast on GPU, fp32 on CPU; optional gradient
checkpointing; LoRA (peft) or full fine-tuning; runs under `accelerate launch` (each process takes its share
of the batches; DDP syncs gradients on the last micro-batch of a step). Peak memory per step goes to
metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import time
from pathlib import Path

import torch
import torch.utils.checkpoint

from sgpo_data.config import TrainConfig
from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.progress import Progress
from sgpo_data.train.data import Example, length_grouped_batches, load_examples, read_training_rows


def collate(examples: list[Example], pad_id: int, device, pack: bool = False) -> dict[str, torch.Tensor]:
    """Prompt+response ids and tensors over predicted positions (input position t predicts t+1). Right-padded
    rows, or with `pack` one row of the sequences end to end with `position_ids` restarting at each (no padding;
    for varlen attention). `seq` numbers each response position's sequence (-1 elsewhere)."""
    if pack:
        spans = [(e, sum(x.length for x in examples[:i])) for i, e in enumerate(examples)]
        rows, width = 1, sum(e.length for e in examples)
    else:
        spans, rows, width = [(e, 0) for e in examples], len(examples), max(e.length for e in examples)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    mask, old, ref = (torch.zeros((rows, width - 1)) for _ in range(3))
    adv = torch.zeros((rows, width - 1))
    seq = torch.full((rows, width - 1), -1, dtype=torch.long)
    for i, (e, start) in enumerate(spans):
        row = 0 if pack else i
        p, r = len(e.prompt_ids), len(e.response_ids)
        ids[row, start : start + p + r] = torch.tensor(e.prompt_ids + e.response_ids)
        attention[row, start : start + p + r] = 1
        positions[row, start : start + p + r] = torch.arange(p + r)
        span = slice(start + p - 1, start + p + r - 1)  # logits at p-1 predict the first response token
        mask[row, span] = 1
        old[row, span] = torch.tensor(e.old_logprobs)
        if e.ref_logprobs is not None:
            ref[row, span] = torch.tensor(e.ref_logprobs)
        adv[row, span] = e.advantage
        seq[row, span] = i
    batch = {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "mask": mask, "old": old,
             "ref": ref, "adv": adv, "seq": seq, "sequences": torch.tensor(len(examples))}
    if pack:
        del batch["attention_mask"]  # the restarting position_ids mark the sequences
    return {k: v.to(device) for k, v in batch.items()}


def _forward(model, batch: dict):
    inner = model
    while hasattr(inner, "module"):  # DDP, accelerate wrappers
        inner = inner.module
    # a transformers model keeps no key/value cache while training; without one it reads packed position_ids
    extra = {"use_cache": False} if hasattr(inner, "config") else {}
    if "attention_mask" in batch:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra)
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **extra)  # packed


def token_logprobs(model, batch: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token under logits / temperature, and the entropy (no gradient), from the full
    logits: the reference that `response_logprobs` must equal."""
    logits = _forward(model, batch).logits[:, :-1]
    logits = logits.float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(2, batch["input_ids"][:, 1:].unsqueeze(2)).squeeze(2) - log_norm
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = log_norm - (probs * logits).sum(-1)
    return logp, entropy


def _head_logprobs(hidden, weight, bias, targets, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.nn.functional.linear(hidden, weight, bias).float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - log_norm
    with torch.no_grad():
        entropy = log_norm - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


@contextlib.contextmanager
def _head_skipped(head):
    """The model's forward ends at the final hidden states: its output layer passes them through."""
    head.forward = lambda hidden: hidden  # an instance attribute shadows the class's forward
    try:
        yield
    finally:
        del head.forward


def output_head(model):
    """The output layer, if `response_logprobs` can apply it by hand: a plain Linear (a LoRA-wrapped or
    customised head is not); None otherwise."""
    while hasattr(model, "module"):
        model = model.module
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if type(head) is torch.nn.Linear else None


def response_logprobs(model, batch: dict, temperature: float, chunk: int = 2048, head=None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs` at the response positions (zero elsewhere), without the full logits: the forward stops
    at the final hidden states (through the model's own forward, so DDP and peft see it), and the output layer
    runs on the response positions only, `chunk` positions at a time, each chunk recomputed in the backward
    pass, so only one chunk's fp32 logits exist at once. The entropy comes from the same pass. `head`: the
    output layer (`output_head(model)`); None falls back to `token_logprobs`."""
    if head is None:
        return token_logprobs(model, batch, temperature)
    with _head_skipped(head):
        hidden = _forward(model, batch).logits[:, :-1]  # the "logits" are the hidden states
    where = batch["mask"].bool()
    states, targets = hidden[where], batch["input_ids"][:, 1:][where]
    logp_parts, entropy_parts = [], []
    for start in range(0, len(targets), chunk):
        part = slice(start, start + chunk)
        if torch.is_grad_enabled():
            lp, ent = torch.utils.checkpoint.checkpoint(_head_logprobs, states[part], head.weight, head.bias,
                                                        targets[part], temperature, use_reentrant=False)
        else:
            lp, ent = _head_logprobs(states[part], head.weight, head.bias, targets[part], temperature)
        logp_parts.append(lp)
        entropy_parts.append(ent)
    logp = torch.zeros(where.shape, dtype=torch.float32, device=hidden.device)
    entropy = torch.zeros(where.shape, dtype=torch.float32, device=hidden.device)
    if logp_parts:
        logp = logp.masked_scatter(where, torch.cat(logp_parts))
        entropy = entropy.masked_scatter(where, torch.cat(entropy_parts))
    return logp, entropy


def policy_loss(logp, batch: dict, cfg: TrainConfig, norm: dict) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss (+ k3 KL), aggregated with the optimizer step's normaliser `norm`.
    `batch["adv"]` is per sequence (B,) or per position (as `mask`); `seq` numbers each position's sequence."""
    mask = batch["mask"]
    adv = batch["adv"] if batch["adv"].shape == mask.shape else batch["adv"].unsqueeze(1).expand_as(mask)
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
        if "seq" in batch:  # per-sequence sums through the sequence numbers (packed rows hold several)
            where = batch["seq"] >= 0
            count = int(batch["sequences"])
            sums = torch.zeros(count, device=mask.device).index_add(0, batch["seq"][where], per_token[where])
            lengths = torch.zeros(count, device=mask.device).index_add(0, batch["seq"][where], mask[where])
            loss = (sums / lengths.clamp(min=1)).sum() / norm["sequences"]
        else:
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
        if cfg.device == "cuda" and not cuda:
            raise SgpoError(f"train.device cuda: torch {torch.__version__} sees no CUDA device (built for CUDA "
                            f"{torch.version.cuda or 'none'}); use --device cpu, or install a CUDA build of torch")
        cuda = cuda and cfg.device != "cpu"
        self.accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
        torch.manual_seed(cfg.seed)
        model, self.tokenizer, self.model_name, _ = load_model(cfg.model, str(self.accelerator.device), "float32")
        context = getattr(model.config, "max_position_embeddings", None) or cfg.max_length
        self.data = load_examples(cfg.data or "", self.tokenizer, cfg.advantage, min(cfg.max_length, context),
                                  cfg.overlong, cfg.skip_zero_advantage, cfg.hub_config, rows)
        self.temperature = cfg.temperature or self.data.temperature or 1.0
        self.examples = self.data.examples
        attention = getattr(model.config, "_attn_implementation", None) or ""
        self.pack = cfg.packing == "on" or (cfg.packing == "auto" and attention.startswith("flash_attention"))
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                     target_modules=cfg.lora_target_modules))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if cfg.lora:
                model.enable_input_require_grads()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.epoch_batches, first_epoch = [], []
        for epoch in range(cfg.epochs):
            batches = length_grouped_batches(self.examples, cfg.batch_size, cfg.seed + epoch)
            batches = batches[: len(batches) // world * world] or batches  # equal shares across processes
            first_epoch = first_epoch or batches
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
        self.head = self._checked_head(first_epoch[0])
        # before any update: the initial policy is the behaviour policy where the data lack one, and the reference
        self._fill_initial_logprobs(first_epoch)
        self.step = 0

    def _batch(self, examples: list[Example]) -> dict:
        return collate(examples, self.tokenizer.pad_token_id, self.accelerator.device, self.pack)

    def logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Response log-probs and entropies of `batch` under the policy, as training computes them."""
        with self.accelerator.autocast():
            return response_logprobs(self.model, batch, self.temperature, self.cfg.logprob_chunk, self.head)

    @torch.no_grad()
    def _checked_head(self, indices: list[int]):
        """The output layer for `response_logprobs`, if on this model it gives the full logits' log-probs (a
        model that changes its logits after the output layer, e.g. soft-capping, does not); else None."""
        head = output_head(self.model)
        if head is None:
            return None
        examples = [self.examples[i] for i in indices]
        for e in examples:  # collate wants behaviour log-probs; any values do here
            e.old_logprobs = e.old_logprobs or [0.0] * len(e.response_ids)
        batch = self._batch(examples)
        self.model.eval()
        fused = response_logprobs(self.model, batch, self.temperature, self.cfg.logprob_chunk, head)[0]
        full = token_logprobs(self.model, batch, self.temperature)[0] * batch["mask"]
        self.model.train()
        for e in examples:
            e.old_logprobs = None if e.needs_logprobs else e.old_logprobs
        return head if torch.allclose(fused, full, atol=1e-4, rtol=1e-4) else None

    @torch.no_grad()
    def _fill_initial_logprobs(self, first_epoch: list[list[int]]) -> None:
        """Behaviour log-probs the data lack, and reference log-probs for the KL term, from the initial policy:
        on the first epoch's micro-batches (every process's), so that the first step's forward is the same
        computation and its importance ratio exactly 1; rows outside them in batches of their own."""
        todo = {id(e) for e in self.examples if e.needs_logprobs or self.cfg.kl_coef}
        if not todo:
            return
        seen = {i for b in first_epoch for i in b}
        rest = [i for i, e in enumerate(self.examples) if i not in seen and id(e) in todo]
        batches = [b for b in first_epoch if any(id(self.examples[i]) in todo for i in b)]
        batches += [rest[k : k + self.cfg.batch_size] for k in range(0, len(rest), self.cfg.batch_size)]
        self.model.eval()
        for indices in batches:
            chunk = [self.examples[i] for i in indices]
            for e in chunk:  # collate wants old log-probs; placeholders, replaced below
                e.old_logprobs = e.old_logprobs or [0.0] * len(e.response_ids)
            batch = self._batch(chunk)
            logp, _ = self.logprobs(batch)
            for k, e in enumerate(chunk):
                values = logp[batch["seq"] == k].tolist()
                if e.needs_logprobs:
                    e.old_logprobs, e.needs_logprobs = values, False
                if self.cfg.kl_coef:
                    e.ref_logprobs = values
        self.model.train()

    def _norm(self, micro_batches: list[list[int]]) -> dict:
        rows = [self.examples[i] for mb in micro_batches for i in mb]
        return {"tokens": max(1, sum(len(e.response_ids) for e in rows)), "sequences": len(rows),
                "max_response": self.max_response}

    def train_step(self, micro_batches: list[list[int]]) -> dict:
        """One optimizer step over `grad_accum` micro-batches (lists of example indices)."""
        started = time.perf_counter()
        cuda = self.accelerator.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.accelerator.device)
        norm, totals, real, padded = self._norm(micro_batches), {}, 0, 0
        self.model.train()
        for j, mb in enumerate(micro_batches):
            examples = [self.examples[i] for i in mb]
            batch = self._batch(examples)
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
            try:
                with sync:
                    logp, entropy = self.logprobs(batch)
                    with self.accelerator.autocast():
                        loss, stats = policy_loss(logp, batch, self.cfg, norm)
                    self.accelerator.backward(loss)
            except torch.OutOfMemoryError:
                raise SgpoError(
                    f"out of memory on {self.accelerator.device} in a micro-batch of {len(mb)} sequences of up to "
                    f"{max(e.length for e in examples)} tokens (train.batch_size {self.cfg.batch_size}, "
                    f"train.max_length {self.cfg.max_length}); lower batch_size and raise grad_accum to keep the "
                    f"step's size, lower max_length, or set gradient_checkpointing: true") from None
            stats["loss"] = float(loss.detach())
            stats["entropy"] = float((entropy * batch["mask"]).sum() / batch["mask"].sum().clamp(min=1))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + (value if key == "loss" else value / len(micro_batches))
            real += sum(e.length for e in examples)
            padded += batch["input_ids"].numel()
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - started
        memory = ({"peak_memory_gb": torch.cuda.max_memory_allocated(self.accelerator.device) / 1e9} if cuda
                  else {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6})
        return {"step": self.step, **totals, "grad_norm": float(grad_norm), "lr": lr,
                "tokens_per_s": real / elapsed, "padding_fraction": 1 - real / padded, "step_time_s": elapsed,
                **memory}

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
        if self.cfg.eval.arithmetic and self.step == 0:
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
            if self.cfg.eval.arithmetic and self.cfg.eval.every and self.step % self.cfg.eval.every == 0:
                evals.append({"step": self.step, **evaluate(self, self.cfg.eval)})
        if log:
            log.close()
        self.save_checkpoint()
        final = self.save_final()
        if self.cfg.eval.arithmetic and (not evals or evals[-1]["step"] != self.step):
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
