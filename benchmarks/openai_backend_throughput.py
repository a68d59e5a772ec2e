"""Throughput of the openai backend against a bare asyncio loop of the `openai` client on the same work.

Start an OpenAI-compatible server first, e.g. vLLM's CPU build serving the shipped model:
    VLLM_CPU_KVCACHE_SPACE=2 OMP_NUM_THREADS=2 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \
        --model ~/.cache/sgpo-data/models/SmolLM2-135M-Instruct.Q4_1-* --served-model-name smollm2 \
        --dtype bfloat16 --enforce-eager --port 8765 --max-num-batched-tokens 16384
    python benchmarks/openai_backend_throughput.py --base-url http://127.0.0.1:8765/v1 --model smollm2

Prints generated tokens/s for both and their ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from openai import AsyncOpenAI

from sgpo_data.backends import SamplingParams, get_backend
from sgpo_data.data import generate_arithmetic


def bare(base_url: str, model: str, conversations, params: SamplingParams, concurrency: int) -> int:
    async def run() -> int:
        client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")
        gate = asyncio.Semaphore(concurrency)

        async def one(i, messages):
            async with gate:
                r = await client.chat.completions.create(
                    model=model, messages=messages, n=params.n, temperature=params.temperature,
                    max_tokens=params.max_new_tokens, seed=params.seed + i, logprobs=True)
                return r.usage.completion_tokens

        try:
            return sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations))))
        finally:
            await client.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    conversations = [[{"role": "user", "content": p["problem"]}] for p in generate_arithmetic(args.prompts, 2, 4, 0)]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    backend = get_backend("openai", args.model, {"base_url": args.base_url})

    def as_the_stage_calls_it() -> int:
        """Engine calls of `concurrency` requests each, one after another (generate.max_in_flight = concurrency x n):
        the batch barrier the generate stage has today."""
        chunks = [conversations[i : i + args.concurrency] for i in range(0, len(conversations), args.concurrency)]
        return sum(c.num_tokens for chunk in chunks for g in backend.generate(chunk, params) for c in g)

    results = {}
    for name, work in (("bare openai client", lambda: bare(args.base_url, args.model, conversations, params,
                                                            args.concurrency)),
                       ("sgpo-data openai backend", as_the_stage_calls_it)):
        started = time.perf_counter()
        tokens = work()
        results[name] = tokens / (time.perf_counter() - started)
        print(f"{name}: {tokens} tokens, {results[name]:.0f} tok/s")
    backend.close()
    print(f"ratio (backend / bare): {results['sgpo-data openai backend'] / results['bare openai client']:.2f} "
          f"({args.prompts} prompts x n={args.n} x {args.max_new_tokens} tokens, {args.concurrency} in flight)")


if __name__ == "__main__":
    main()
