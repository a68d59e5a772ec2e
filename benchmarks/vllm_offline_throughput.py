"""The generate stage on the vllm backend against a bare `LLM.generate` on the same prompts, seeds and sampling
parameters, with the same engine (loaded once, its prefix cache reset between runs). Run it in an environment
with vLLM (`make test` builds .venv-vllm with vLLM's CPU build):

    VLLM_CPU_KVCACHE_SPACE=2 OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/vllm_offline_throughput.py \
        --prompts 32 --n 4 --max-new-tokens 64 --dtype bfloat16

The stage is timed end to end without the engine load (reading prompts, the call cache, grading, writing
Parquet); the bare call only generates. Prints generated tokens/s for both and their ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: the shipped SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=None, help="default: every sequence at once")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt

    from sgpo_data.backends import BACKENDS
    from sgpo_data.backends.chat import prompt_ids
    from sgpo_data.backends.vllm_backend import VLLMBackend, VLLMOptions
    from sgpo_data.config import Recipe
    from sgpo_data.data import load_prompts
    from sgpo_data.stages import run_stage
    from sgpo_data.prompts import conversation
    from sgpo_data.stages.generate import prompt_seed

    options = VLLMOptions(dtype=args.dtype)
    started = time.perf_counter()
    backend = VLLMBackend(args.model, options)
    print(f"engine loaded in {time.perf_counter() - started:.1f} s")
    backend.close = lambda: None  # the stage closes its engine; here the same engine serves every run
    BACKENDS.register("vllm-loaded", options=VLLMOptions)(lambda model, options: backend)

    recipe = Recipe.model_validate({
        "data": {"source": "arithmetic", "arithmetic": {"num_problems": args.prompts, "seed": 0}},
        "generate": {"backend": {"name": "vllm-loaded", "options": {"dtype": args.dtype}}, "model": args.model,
                     "sampling": {"num_samples": args.n, "temperature": 1.0, "max_new_tokens": args.max_new_tokens},
                     "max_in_flight": args.max_in_flight or args.prompts * args.n, "prompts_per_shard": 8},
    })
    s = recipe.generate.sampling
    prompts = load_prompts(recipe.data).to_pylist()
    inputs = [TokensPrompt(prompt_token_ids=prompt_ids(backend.tokenizer, conversation(recipe.generate, p["problem"])))
              for p in prompts]
    params = [VSamplingParams(n=s.num_samples, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                              seed=prompt_seed(s.seed, p["prompt_id"]), logprobs=0) for p in prompts]

    results: dict[str, list[float]] = {"bare LLM.generate": [], "generate stage": []}
    for _ in range(args.repeats):
        backend.llm.reset_prefix_cache()
        started = time.perf_counter()
        outputs = backend.llm.generate(inputs, params, use_tqdm=False)
        tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        results["bare LLM.generate"].append(tokens / (time.perf_counter() - started))

        backend.llm.reset_prefix_cache()
        with tempfile.TemporaryDirectory() as run:
            started = time.perf_counter()
            usage = run_stage("generate", recipe, Path(run)).manifest["statistics"]["usage"]
            results["generate stage"].append(usage["completion_tokens"] / (time.perf_counter() - started))
        for name, values in results.items():
            print(f"{name}: {values[-1]:.1f} tok/s")
    bare, stage = (max(v) for v in results.values())
    print(f"best of {args.repeats}: bare {bare:.1f} tok/s, stage {stage:.1f} tok/s, ratio {stage / bare:.3f} "
          f"({args.prompts} prompts x n={args.n} x {args.max_new_tokens} tokens, "
          f"max_in_flight {recipe.generate.max_in_flight})")


if __name__ == "__main__":  # vLLM starts worker processes: the guard is required
    main()
