"""distilabel's OpenAI-compatible generation on the requests that `stream_throughput.py --write-requests FILE`
wrote (the generate stage's own prompts, n and max_tokens), for a comparison on the same server. distilabel
pins its own dependencies: run it from a separate environment, e.g.

    python -m venv /tmp/dl && /tmp/dl/bin/pip install "distilabel[openai]==1.5.3"
    /tmp/dl/bin/python benchmarks/distilabel_openai.py --requests REQ.jsonl --base-url URL --model smollm2 \
        --batch-size 32

`--batch-size` rows go out together (distilabel's `input_batch_size`), so it is the concurrency. Prints
generated tokens/s (the server's usage, summed once per request); asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import ChatGeneration

    bodies = [json.loads(line) for line in open(args.requests)]
    n, max_tokens = bodies[0]["n"], bodies[0]["max_tokens"]
    with Pipeline(name="sgpo-benchmark") as pipeline:
        load = LoadDataFromDicts(data=[{"messages": b["messages"]} for b in bodies], batch_size=len(bodies))
        chat = ChatGeneration(
            llm=OpenAILLM(model=args.model, base_url=args.base_url, api_key="EMPTY", max_retries=3, timeout=300,
                          generation_kwargs={"max_new_tokens": max_tokens, "temperature": bodies[0]["temperature"],
                                             "top_p": bodies[0]["top_p"]}),
            num_generations=n, group_generations=True, input_batch_size=args.batch_size)
        load >> chat
    started = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    elapsed = time.perf_counter() - started
    rows = distiset["default"]["train"]
    generated = sum(1 for r in rows for g in r["generation"] if g is not None)
    tokens = 0
    for row in rows:
        stats = (row.get("distilabel_metadata") or [{}])[0].get("statistics_chat_generation_0") or {}
        out = stats.get("output_tokens") or 0
        tokens += out if isinstance(out, int) else out[0]  # the request's total, repeated for each of its n generations
    print(f"distilabel 1.5.3: {len(rows)} requests x n={n}, {generated} generations, {tokens} tokens in "
          f"{elapsed:.1f} s: {tokens / elapsed:.1f} tok/s (batch size {args.batch_size})")


if __name__ == "__main__":
    main()
