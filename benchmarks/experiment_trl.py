"""What running `sgpo-data experiment`'s arms inside TRL's GRPOTrainer would cost: seconds per RL update of
GRPOTrainer against the experiment's own loop, at the experiment's shape (prompts x G samples of the chain task,
temperature 1, the same SGPOReward with the exact `chain` judge, one update per batch).

    python benchmarks/experiment_trl.py [--preset cpu] [--steps 8] [--set model.d_model=64 ...]

TRL needs a transformers model and tokenizer: the benchmark builds a Llama of the policy's width and depth
(random weights, nothing downloaded) and a character tokenizer over the task's symbols. The loop runs its own
policy (`TinyGPT`) of the same width and depth. Both policies are untrained: a response ends wherever the end
mark is sampled, at most the task's response length. Prints figures, and the grid's projected time with each;
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time


def char_tokenizer(symbols: str, pad: str, end: str):
    """A transformers tokenizer with one id per character, in the order of `symbols` (so ids match CharVocab)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(symbols)}, unk_token=pad))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=end, unk_token=pad)


def trl_seconds_per_step(cfg, lab, steps: int) -> float:
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from sgpo_data.experiment.rewards import ArmReward

    m, rl = cfg.model, cfg.rl
    tokenizer = char_tokenizer(lab.vocab.symbols, lab.vocab.symbols[lab.vocab.pad_id], lab.vocab.symbols[lab.vocab.end_id])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(lab.vocab), hidden_size=m.d_model, intermediate_size=4 * m.d_model, num_hidden_layers=m.layers,
        num_attention_heads=m.heads, max_position_embeddings=lab.task.prompt_width + lab.task.max_response,
        tie_word_embeddings=True, pad_token_id=lab.vocab.pad_id, eos_token_id=lab.vocab.end_id, bos_token_id=None))
    rng = random.Random(0)
    problems = [lab.task.problem(rng) for _ in range(rl.prompts * (steps + 2))]
    data = Dataset.from_dict({"prompt": [lab.task.prompt(p) for p in problems],
                              "solution": [p.answer for p in problems],
                              "reference_solution": [p.solution for p in problems],
                              "problem": [p.text for p in problems]})
    reward = ArmReward("sgpo", cfg, seed=0).exact  # the product's SGPOReward, exact judge, the preset's grader

    async def sgpo(prompts, completions, **columns):  # TRL awaits it, as it awaits SGPOReward itself
        return await reward(prompts, [c.removesuffix(tokenizer.eos_token) for c in completions], **columns)

    sgpo.__name__ = "sgpo"
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=rl.prompts * rl.group_size,
                          num_generations=rl.group_size, max_completion_length=lab.task.max_response,
                          temperature=1.0, learning_rate=rl.lr, beta=rl.kl_coef, epsilon=rl.clip_eps,
                          max_grad_norm=rl.max_grad_norm, logging_steps=1, report_to="none", use_cpu=True,
                          bf16=False, save_strategy="no", seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[sgpo], args=args, train_dataset=data,
                              processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
    reward.close()
    return statistics.mean(times[1:] or times)  # the first step pays one-off costs


def loop_seconds_per_step(lab) -> float:
    """Mean seconds per update of `steps` updates (evaluations, outside the updates, left out)."""
    from sgpo_data.experiment.loop import run_arm

    run = run_arm(lab, "sgpo", 0, lab.policy(0).state_dict())
    return run["curve"][-1]["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="a preset key, dotted.key=value")
    a = parser.parse_args()

    import torch

    from sgpo_data.experiment.loop import Lab
    from sgpo_data.experiment.presets import resolve

    cfg = resolve(a.preset, overrides=[*a.set, f"rl.steps={a.steps}", f"rl.eval_every={a.steps}", "rl.eval_problems=8",
                                       "device=cpu"])
    torch.set_num_threads(cfg.threads)
    lab = Lab(cfg)
    loop = loop_seconds_per_step(lab)
    trl = trl_seconds_per_step(cfg, lab, a.steps)
    full = resolve(a.preset, overrides=a.set)
    runs = full.seeds * sum(len(s.arms) for s in full.settings.values())
    grid = {name: runs * full.rl.steps * s / full.workers / 60 for name, s in (("loop", loop), ("trl", trl))}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {cfg.threads} torch "
          f"thread(s); shape: {cfg.rl.prompts} prompts x G {cfg.rl.group_size}, d_model {cfg.model.d_model}, "
          f"{cfg.model.layers} layers, up to {lab.task.max_response} response tokens")
    print(f"experiment loop: {loop:.3f} s/update; TRL GRPOTrainer: {trl:.3f} s/update; TRL / loop: {trl / loop:.1f}x")
    print(f"the {a.preset} preset's RL ({runs} runs x {full.rl.steps} updates on {full.workers} workers, warm-ups and "
          f"evaluations left out): loop {grid['loop']:.0f} min, TRL {grid['trl']:.0f} min")


if __name__ == "__main__":
    main()
