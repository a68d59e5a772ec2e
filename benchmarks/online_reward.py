"""Online rewards at trainer speed: responses/s of the SGPO reward as TRL and verl call it, against one bare
batched judge call over the same rows.

    python benchmarks/online_reward.py [--groups 64] [--g 8] [--median-s 0.25] [--sigma 0.5] [--workers 8]

The judge is an `llm` judge on the openai backend, against the fake OpenAI server of tests/fault_server.py, in a
process of its own (each request waits a seeded lognormal time drawn from its body, so the same request waits as
long under every caller). Every response is
wrong, so every one is judged: one request each. Four ways over the same rows:
- bare: `Judging.verdicts`, the judging core called once on all rows (no grading, no scoring);
- TRL: `SGPOReward` awaited on an event loop in a daemon thread, as GRPOTrainer's `_calculate_rewards` does;
- verl: its real reward loop, `RewardLoopManager` with `--workers` Ray actors (verl's default is 8), each awaiting
  one `compute_score` per response of its chunk;
- before: the serial figure of the lock-serialised `compute_score` this replaces (64 responses, 0.25 s, 8
  threads: 21.8 s), printed for reference.
Each way runs once to warm up (engines, grader workers, Ray actors); the best of 3 timed runs is printed. The judge's window is the
same everywhere (`--max-in-flight`). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the fake server: tests/fault_server.py

from tests.fault_server import start_process  # noqa: E402

BEFORE = {"rows": 64, "seconds": 21.8}  # 64 wrong responses in 8 groups, 0.25 s per request, 8 threads


def make_rows(groups: int, g: int) -> list[dict]:
    rows = []
    for p in range(groups):
        a, b, c = 3 + p % 7, 4 + p % 5, 2 + p % 3
        for s in range(g):
            total = a + b + c + 1 + s  # always wrong
            rows.append({"problem": f"Problem {p}: what is {a} + {b} + {c}?", "answer": str(a + b + c),
                         "reference_solution": f"{a} + {b} = {a + b}.\n\n{a + b} + {c} = {a + b + c}.",
                         "response": f"{a} + {b} = {a + b}.\n\n{a + b} + {c} = {total}.\n\nThe answer is {total}.",
                         "prompt_id": f"p{p}"})
    return rows


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bare(section: dict, rows: list[dict]) -> float:
    from sgpo_data.config import JudgeConfig
    from sgpo_data.judges.core import Judging, Row

    judging = Judging(JudgeConfig(**section))
    items = [Row(r["problem"], r["response"], r["answer"], r["reference_solution"], r["prompt_id"], False)
             for r in rows]
    try:
        return timed(lambda: judging.verdicts(items))
    finally:
        judging.close()


def trl(section: dict, rows: list[dict]) -> float:
    from trl.trainer.utils import start_event_loop_in_daemon

    from sgpo_data.integrations.reward import SGPOReward

    reward = SGPOReward(judge=section)
    thread, loop, ready = start_event_loop_in_daemon(name="reward")
    ready.wait()
    prompts = [[{"role": "user", "content": r["problem"]}] for r in rows]
    completions = [[{"role": "assistant", "content": r["response"]}] for r in rows]
    columns = {"solution": [r["answer"] for r in rows], "problem": [r["problem"] for r in rows],
               "reference_solution": [r["reference_solution"] for r in rows]}

    async def call():
        return await asyncio.gather(reward(prompts=prompts, completions=completions, **columns))

    try:
        return timed(lambda: asyncio.run_coroutine_threadsafe(call(), loop).result())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        reward.close()


def verl(section: dict, rows: list[dict], workers: int) -> float:
    import numpy as np
    import ray
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    import sgpo_data.integrations.verl as integration
    from sgpo_data.backends.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    ids = [tokenizer(r["response"], add_special_tokens=False).input_ids for r in rows]
    width = max(map(len, ids))
    responses = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), 1 + width), dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, :len(row)] = torch.tensor(row)
        mask[i, :1 + len(row)] = 1
    prompts = torch.ones((len(rows), 1), dtype=torch.long)
    data = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={"data_source": np.array(["arithmetic"] * len(rows), dtype=object),
                     "reward_model": np.array([{"ground_truth": r["answer"]} for r in rows], dtype=object),
                     "extra_info": np.array([{k: r[k] for k in ("problem", "reference_solution", "prompt_id")}
                                             for r in rows], dtype=object)})
    verl_dir = Path(__import__("verl").__file__).parent
    reward = OmegaConf.load(verl_dir / "trainer/config/reward/reward.yaml")
    reward.num_workers = workers
    reward.custom_reward_function = {"path": integration.__file__, "name": "compute_score",
                                     "reward_kwargs": {"judge": section, "grader_options": {"workers": 1}}}
    config = OmegaConf.create({"actor_rollout_ref": {"model": {"path": resolve_model(None)[0], "tokenizer_path": None}}})
    config.reward = reward
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        manager = RewardLoopManager(config)
        return timed(lambda: manager.compute_rm_score(data))
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--g", type=int, default=8)
    parser.add_argument("--median-s", type=float, default=0.25)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=8, help="verl's reward.num_workers (its default: 8)")
    parser.add_argument("--max-in-flight", type=int, default=512, help="the judge's window, for every caller")
    args = parser.parse_args()

    server, url = start_process("--median-s", str(args.median_s), "--sigma", str(args.sigma))
    section = {"name": "llm", "model": "fake", "max_in_flight": args.max_in_flight,
               "backend": {"name": "openai", "options": {"base_url": url}}}
    rows = make_rows(args.groups, args.g)
    try:
        figures = {"bare": bare(section, rows), "TRL": trl(section, rows),
                   f"verl ({args.workers} workers)": verl(section, rows, args.workers)}
    finally:
        server.terminate()
    n = len(rows)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {n} wrong responses in {args.groups} groups of "
          f"{args.g}, llm judge, one request each, seeded latency median {args.median_s} s (sigma {args.sigma}), "
          f"window {args.max_in_flight}")
    base = n / figures["bare"]
    for name, seconds in figures.items():
        print(f"  {name:>18}: {seconds:6.2f} s, {n / seconds:7.1f} responses/s, {n / seconds / base:.2f}x bare")
    print(f"  {'before (serial)':>18}: {BEFORE['seconds']:6.2f} s for {BEFORE['rows']} responses at 0.25 s, "
          f"{BEFORE['rows'] / BEFORE['seconds']:7.1f} responses/s")


if __name__ == "__main__":
    main()
