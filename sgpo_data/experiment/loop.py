"""The experiment's training: a supervised warm-up on right chains, then online RL, one arm and seed at a time.

Warm-up, in two phases. First, cross-entropy on freshly drawn right chains until greedy accuracy on problems of
the warm-up's own (apart from the held-out ones that the RL evaluations use) reaches `competence`: small
transformers learn this task in sudden jumps, so a policy stopped early on right chains is caught in the middle
of one, and neither RL arm moved it in calibration. Some initialisations wait long for the jump (two seeds in
five had not made it after 3000 steps), so a policy still below half the competence after `restart_after` steps
starts afresh from a new initialisation (seed + 1000 x attempt); the number of restarts is reported. Second, per
setting, `slip_steps` steps on the chains of a weak solver that forgets the carries of a step with probability
`slip`: the policy keeps the arithmetic but learns to slip, so its success at temperature 1 is about the mean
over chain lengths K of (1 - 0.45 slip)^K (a step of `+` carries 45 % of the time), and its greedy choice
forgets every carry once slip > 0.5. RL has to unlearn the slip. Every arm of a seed starts from the same policy.

RL, each update: draw `prompts` problems, sample G responses each at temperature 1 (keeping their log-probs),
reward them with the arm's `SGPOReward`, take the group advantages (`group_advantages`, the score section's
estimator), and take one step of the offline trainer's clipped policy-gradient loss (`collate`,
`token_logprobs`, `policy_loss`) with AdamW. This is on-policy GRPO as online trainers run it, one update per
batch of samples, so the importance ratio is 1 at the step; the loss is normalised over every sampled token of
the batch, as TRL does, while rows with zero advantage (which carry no gradient) skip the forward pass. TRL's
GRPOTrainer is not used: at this model size its per-step overhead would dominate the CPU budget.
"""

from __future__ import annotations

import copy
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from sgpo_data.config import TrainConfig
from sgpo_data.experiment.policy import TinyGPT
from sgpo_data.experiment.presets import ExperimentPreset
from sgpo_data.experiment.rewards import ArmReward
from sgpo_data.experiment.task import ChainTask, CharVocab, Problem, progress
from sgpo_data.scoring.advantages import group_advantages
from sgpo_data.train.data import Example
from sgpo_data.train.trainer import collate, policy_loss, token_logprobs


def device_for(preset: ExperimentPreset) -> torch.device:
    if preset.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preset.device)


class Lab:
    """What every run of one preset shares: the task, the vocabulary, the held-out problems, the device."""

    def __init__(self, preset: ExperimentPreset):
        t = preset.task
        self.preset, self.device = preset, device_for(preset)
        self.task, self.vocab = ChainTask(t.modulus, t.ops, t.min_ops, t.max_ops), CharVocab()
        self.held_out = self.task.problems(preset.eval_seed, preset.rl.eval_problems)
        self.check = self.task.problems(preset.eval_seed + 1, preset.rl.eval_problems)  # the warm-up's own

    def policy(self, seed: int) -> TinyGPT:
        m = self.preset.model
        torch.manual_seed(seed)
        max_len = self.task.prompt_width + self.task.max_response
        return TinyGPT(len(self.vocab), m.d_model, m.layers, m.heads, max_len, m.rotary).to(self.device)

    def prompt_ids(self, problems: list[Problem], repeat: int = 1) -> torch.Tensor:
        ids = torch.tensor([self.vocab.encode(self.task.prompt(p)) for p in problems], device=self.device)
        return ids.repeat_interleave(repeat, 0)

    def sample(self, model: TinyGPT, problems: list[Problem], repeat: int, temperature: float,
               generator: torch.Generator | None = None):
        """Texts, produced ids and their log-probs per response, responses of a problem next to each other."""
        prompts = self.prompt_ids(problems, repeat)
        ids, logps = model.sample(prompts, self.task.max_response, temperature, self.vocab.end_id, generator)
        texts, kept, kept_logps = [], [], []
        for row, row_logps in zip(ids.tolist(), logps.tolist()):
            text, produced = self.vocab.decode_response(row)
            texts.append(text)
            kept.append(produced)
            kept_logps.append(row_logps[: len(produced)])
        return prompts, texts, kept, kept_logps

    def evaluate(self, model: TinyGPT, grader, generator: torch.Generator, problems: list[Problem] | None = None,
                 greedy_only: bool = False) -> dict:
        """Accuracy and mean steps right before the first error on `problems` (the held-out ones), greedy and
        at temperature 1 (one sample each)."""
        model.eval()
        problems = problems or self.held_out
        answers = [p.answer for p in problems]
        out = {}
        for name, temperature in (("greedy", 0.0), ("sampled", 1.0))[: 1 if greedy_only else 2]:
            _, texts, _, _ = self.sample(model, problems, 1, temperature, generator)
            correct = [g.is_correct is True for g in grader.grade(texts, answers)]
            out[f"{name}_acc"] = float(np.mean(correct))
            out[f"{name}_progress"] = float(np.mean([progress(t, p) for t, p in zip(texts, problems)]))
        model.train()
        return out


def warm_up(lab: Lab, seed: int, slips: dict[str, float], grader) -> dict[str, dict]:
    """Supervised warm-up of seed `seed`'s policy; per setting name in `slips`: the policy's state, the warm-up
    steps it took, and its evaluation on the warm-up's own problems."""
    w = lab.preset.warmup
    rng, generator = random.Random(seed * 7919 + 1), torch.Generator(lab.device).manual_seed(seed)
    steps, attempt, since = 0, 0, 0
    model = lab.policy(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=w.lr, weight_decay=0.0)
    accuracy = 0.0
    while steps < w.max_steps:
        if since % w.check_every == 0:
            accuracy = lab.evaluate(model, grader, generator, lab.check, greedy_only=True)["greedy_acc"]
            if accuracy >= w.competence:
                break
        if since >= w.restart_after and accuracy < w.competence / 2:  # no jump yet: start afresh
            attempt, since = attempt + 1, 0
            model = lab.policy(seed + 1000 * attempt)
            optimizer = torch.optim.AdamW(model.parameters(), lr=w.lr, weight_decay=0.0)
        _supervised_step(lab, model, optimizer, rng, 0.0)
        steps, since = steps + 1, since + 1
    competent = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    kept = {}
    for name, slip in slips.items():
        model.load_state_dict(competent[0])
        optimizer.load_state_dict(competent[1])
        for _ in range(w.slip_steps):
            _supervised_step(lab, model, optimizer, rng, slip)
        kept[name] = {"state": copy.deepcopy(model.state_dict()), "step": steps + w.slip_steps,
                      "competent_at": steps, "restarts": attempt,
                      "eval": lab.evaluate(model, grader, generator, lab.check)}
    return kept


def _supervised_step(lab: Lab, model: TinyGPT, optimizer, rng: random.Random, slip: float) -> None:
    """One cross-entropy step on the responses of a batch of chains (a weak solver's, with `slip`)."""
    problems = [lab.task.problem(rng, slip=slip) for _ in range(lab.preset.warmup.batch)]
    prompts = lab.prompt_ids(problems)
    responses = [lab.vocab.encode(p.solution) + [lab.vocab.end_id] for p in problems]
    targets = torch.full((len(problems), max(map(len, responses))), -100, dtype=torch.long)
    for i, r in enumerate(responses):
        targets[i, : len(r)] = torch.tensor(r)
    targets = targets.to(lab.device)
    inputs = torch.cat([prompts, targets.clamp(min=0)], 1)[:, :-1]
    logits = model(input_ids=inputs).logits[:, prompts.shape[1] - 1 :]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _group_stats(graded, groups: np.ndarray, size: int) -> dict:
    rewards, correct, first = (x.reshape(-1, size) for x in (graded.rewards, graded.correct, graded.first_errors))
    negative = ~correct.any(1)
    same_step = (first == first[:, :1]).all(1)
    return {"zero_std": float((np.ptp(rewards, axis=1) == 0).mean()), "all_negative": float(negative.mean()),
            "same_step": float(same_step[negative].mean()) if negative.any() else math.nan,
            "train_success": float(correct.mean())}


def run_arm(lab: Lab, arm: str, seed: int, state: dict, grader_seed: int | None = None) -> dict:
    """Online RL of one arm from the warmed-up `state`; returns the evaluations (a curve) and, if the loss
    became NaN, the step it did."""
    p, rl = lab.preset, lab.preset.rl
    model = lab.policy(seed)
    model.load_state_dict(state)
    reference = copy.deepcopy(model).eval() if rl.kl_coef else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=rl.lr, weight_decay=0.0)
    cfg = TrainConfig(lr=rl.lr, clip_eps_low=rl.clip_eps, clip_eps_high=rl.clip_eps, kl_coef=rl.kl_coef,
                      loss_agg=rl.loss_agg, max_grad_norm=rl.max_grad_norm, seed=seed)
    reward = ArmReward(arm, p, seed if grader_seed is None else grader_seed)
    rng = random.Random(seed * 7919 + 2)  # the same problems and sampling stream start in every arm
    sample_gen = torch.Generator(lab.device).manual_seed(seed * 7919 + 3)
    eval_gen = torch.Generator(lab.device).manual_seed(seed * 7919 + 4)
    curve, window, diverged = [], [], None
    try:
        for step in range(rl.steps + 1):
            if step % rl.eval_every == 0 or step == rl.steps:
                train = {k: _mean([w[k] for w in window]) for k in ("train_success", "zero_std", "all_negative", "same_step", "train_progress",
                                   "loss", "entropy", "step_s")}
                curve.append({"step": step, **lab.evaluate(model, reward.exact.grader, eval_gen), **train})
                window = []
            if step == rl.steps:
                break
            stats = _update(lab, model, reference, optimizer, cfg, reward, rng, sample_gen, step)
            if not math.isfinite(stats["loss"]):
                diverged = step
                break
            window.append(stats)
    finally:
        reward.close()
    return {"arm": arm, "seed": seed, "curve": curve, "diverged_at": diverged}


def _update(lab: Lab, model, reference, optimizer, cfg: TrainConfig, reward: ArmReward, rng, generator,
            step: int) -> dict:
    rl, started = lab.preset.rl, time.perf_counter()
    problems = [lab.task.problem(rng) for _ in range(rl.prompts)]
    model.eval()
    prompts, texts, ids, logps = lab.sample(model, problems, rl.group_size, 1.0, generator)
    model.train()
    rows = [p for p in problems for _ in range(rl.group_size)]
    groups = np.repeat(np.arange(len(problems)), rl.group_size)
    graded = reward(texts, [p.answer for p in rows], [f"{step}-{g}" for g in groups], [p.text for p in rows],
                    [p.solution for p in rows])
    score = reward.exact.score_config
    adv = group_advantages(graded.rewards, groups, score.eps, score.advantage, score.std_floor)
    prompt_ids = prompts.tolist()
    examples = [Example(prompt_ids[i], ids[i], float(adv[i]), logps[i]) for i in np.flatnonzero(adv)]
    stats = {**_group_stats(graded, groups, rl.group_size),
             "train_progress": float(np.mean([progress(t, p) for t, p in zip(texts, rows)])),
             "loss": 0.0, "entropy": math.nan}
    if examples:
        norm = {"tokens": sum(map(len, ids)), "sequences": len(ids), "max_response": max(map(len, ids))}
        batch = collate(examples, lab.vocab.pad_id, lab.device)
        if reference is not None:
            with torch.no_grad():
                batch["ref"] = token_logprobs(reference, batch, 1.0)[0] * batch["mask"]
        logp, entropy = token_logprobs(model, batch, 1.0)
        loss, _ = policy_loss(logp, batch, cfg, norm)
        stats["loss"] = float(loss.detach())
        stats["entropy"] = float((entropy * batch["mask"]).sum() / batch["mask"].sum())
        if math.isfinite(stats["loss"]):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
    stats["step_s"] = time.perf_counter() - started
    return stats
