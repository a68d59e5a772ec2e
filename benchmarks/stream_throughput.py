"""The generate and judge stages against a bare asyncio loop of the `openai` client, sending the same requests
with the same concurrency, on the same server.

    # the fake server of tests/fault_server.py with seeded lognormal latencies (p99 = 10x the median), started
    # here in its own process:
    python benchmarks/stream_throughput.py --fake --concurrency 1 8 64
    # a real server, e.g. vLLM's CPU build serving the shipped model as `smollm2` (see the README):
    python benchmarks/stream_throughput.py --base-url http://127.0.0.1:8011/v1 --model smollm2 \
        --concurrency 32 --prompts 64 --max-new-tokens 128 --stages generate

The stage is timed end to end as a user runs it (`run_stage`: reading prompts, the call cache, grading, writing
Parquet); the bare loop only sends. Against the fake server the figure is requests/s, against a real one
generated tokens/s. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
from openai import AsyncOpenAI

from sgpo_data.config import Recipe
from sgpo_data.data import load_prompts
from sgpo_data.judges.base import JudgeInput
from sgpo_data.judges.llm_judge import load_template, render_prompt
from sgpo_data.stages import run_stage
from sgpo_data.prompts import conversation
from sgpo_data.run_reader import read_stage
from sgpo_data.segmenters import get_segmenter
from sgpo_data.stages.generate import prompt_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fake server: tests/fault_server.py
from tests.fault_server import start_process  # noqa: E402


def bare_loop(base_url: str, model: str, bodies: list[dict], concurrency: int) -> tuple[float, int]:
    """Every request through one client, at most `concurrency` at once: (seconds, completion tokens)."""

    async def run() -> int:
        client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=3, timeout=300)
        gate = asyncio.Semaphore(concurrency)

        async def one(body):
            async with gate:
                response = await client.chat.completions.create(model=model, **body)
                return response.usage.completion_tokens

        try:
            return sum(await asyncio.gather(*(one(b) for b in bodies)))
        finally:
            await client.close()

    started = time.perf_counter()
    tokens = asyncio.run(run())
    return time.perf_counter() - started, tokens


def policy_bodies(recipe: Recipe) -> list[dict]:
    """The requests the generate stage sends: one per prompt, n = G, the prompt's own seed."""
    gen, s = recipe.generate, recipe.generate.sampling
    return [{"messages": conversation(gen, p["problem"]), "n": s.num_samples, "temperature": s.temperature,
             "top_p": s.top_p, "max_tokens": s.max_new_tokens, "seed": prompt_seed(s.seed, p["prompt_id"]),
             "logprobs": True, "extra_body": {"return_tokens_as_token_ids": True}}
            for p in load_prompts(recipe.data).to_pylist()]


def judge_bodies(recipe: Recipe, run: Path) -> list[dict]:
    """The requests the judge stage sends: one guided-choice request per wrong response."""
    table = read_stage(run, "generate")
    table = table.filter(pc.invert(pc.fill_null(table["is_correct"], False)))
    template, segmenter = load_template(), get_segmenter(recipe.judge.segmenter.name, recipe.judge.segmenter.options)
    bodies = []
    for row in table.to_pylist():
        steps = segmenter.split(row["response"])
        item = JudgeInput(row["problem"], row["reference_solution"], steps)
        bodies.append({"messages": [{"role": "user", "content": render_prompt(template, item)}],
                       "temperature": 0.0, "max_tokens": max(len(str(i)) for i in range(-1, len(steps))) + 8,
                       "extra_body": {"structured_outputs": {"choice": [str(i) for i in range(-1, len(steps))]}}})
    return bodies


def recipe_for(args, prompts: int, concurrency: int) -> Recipe:
    engine = {"backend": {"name": "openai", "options": {"base_url": args.base_url}}, "model": args.model}
    return Recipe.model_validate({
        "data": {"source": "arithmetic", "arithmetic": {"num_problems": prompts, "seed": 0}},
        "generate": {**engine, "sampling": {"num_samples": args.n, "temperature": 1.0,
                                            "max_new_tokens": args.max_new_tokens, "seed": 0},
                     "max_in_flight": concurrency * args.n, "prompts_per_shard": args.prompts_per_shard},
        "judge": {**engine, "max_in_flight": concurrency},
    })


def timed_stage(name: str, recipe: Recipe, run: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    result = run_stage(name, recipe, run)
    return time.perf_counter() - started, result.manifest["statistics"]["usage"]


def start_fake_server(median_s: float, sigma: float) -> tuple[subprocess.Popen, str]:
    """The fake server in its own process; policy answers of 32 words."""
    return start_process("--median-s", str(median_s), "--sigma", str(sigma), "--tokens", "32")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fake", action="store_true", help="start the fake latency server")
    parser.add_argument("--median-s", type=float, default=0.5)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompts", type=int, default=None, help="default: max(32, 8 x concurrency)")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--prompts-per-shard", type=int, default=8)
    parser.add_argument("--stages", nargs="+", default=["generate", "judge"])
    parser.add_argument("--write-requests", help="write the generate stage's requests here (JSONL) and stop: "
                        "the input of benchmarks/distilabel_openai.py")
    args = parser.parse_args()
    if args.write_requests:
        recipe = recipe_for(args, args.prompts or max(32, 8 * args.concurrency[0]), args.concurrency[0])
        with open(args.write_requests, "w") as out:
            out.writelines(json.dumps(body) + "\n" for body in policy_bodies(recipe))
        return
    server = None
    if args.fake:
        server, args.base_url = start_fake_server(args.median_s, args.sigma)
        print(f"fake server: lognormal latency, median {args.median_s} s, sigma {args.sigma} "
              f"(p99 {args.median_s * 2.718281828 ** (2.326 * args.sigma):.1f} s)")
    unit = "req/s" if args.fake else "tok/s"
    try:
        for concurrency in args.concurrency:
            prompts = args.prompts or max(32, 8 * concurrency)
            recipe = recipe_for(args, prompts, concurrency)
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp)
                for stage in args.stages:
                    bodies = policy_bodies(recipe) if stage == "generate" else judge_bodies(recipe, run)
                    bare_s, bare_tokens = bare_loop(args.base_url, args.model, bodies, concurrency)
                    stage_s, usage = timed_stage(stage, recipe, run)
                    bare = len(bodies) / bare_s if args.fake else bare_tokens / bare_s
                    staged = usage["requests"] / stage_s if args.fake else usage["completion_tokens"] / stage_s
                    print(f"{stage:8s} concurrency {concurrency:3d}: {len(bodies)} requests; bare loop {bare_s:6.1f} s "
                          f"{bare:7.1f} {unit}; stage {stage_s:6.1f} s {staged:7.1f} {unit}; "
                          f"ratio {staged / bare:.3f}", flush=True)
    finally:
        if server is not None:
            server.kill()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
