"""How often does vLLM's guided choice pick another answer than the likeliest whole answer?

Guided decoding (`choice: guided`) constrains tokens one at a time and takes the greedy token at each step, so a
multi-token answer such as "-1" or "12" can win on its first token although another answer is likelier as a
whole. The vllm backend's default (`choice: likelihood`) scores every allowed answer completely. Both judge the
same ProcessBench items (steps given, the first wrong one labelled; --data is a folder with its JSON files); the
script prints their disagreement and each one's ProcessBench accuracy. Run it where vLLM is installed:

    VLLM_CPU_KVCACHE_SPACE=2 OMP_NUM_THREADS=2 .venv-vllm/bin/python benchmarks/judge_choice_agreement.py \
        --data ../data/processbench --subset gsm8k --limit 200 --dtype bfloat16

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="folder with ProcessBench's gsm8k.json, math.json, ...")
    parser.add_argument("--subset", default="gsm8k", choices=["gsm8k", "math", "olympiadbench", "omnimath"])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--model", default=None, help="default: the shipped SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()

    from sgpo_data.backends import get_backend
    from sgpo_data.judges import JudgeInput, get_judge

    items = json.loads((args.data / f"{args.subset}.json").read_text())
    items = random.Random(0).sample(items, min(args.limit, len(items)))
    inputs = [JudgeInput(x["problem"], None, x["steps"]) for x in items]
    picks = {}
    for mode in ("likelihood", "guided"):
        backend = get_backend("vllm", args.model, {"dtype": args.dtype, "choice": mode, "max_model_len": args.max_model_len})
        picks[mode] = [v.first_error_step for v in get_judge("llm", backend).judge(inputs, max_in_flight=64)]
        backend.close()
    both = [(a, b, x) for a, b, x in zip(picks["likelihood"], picks["guided"], items) if a is not None and b is not None]
    differ = sum(a != b for a, b, _ in both)
    print(f"ProcessBench {args.subset}, {len(items)} items, judge {args.model or 'SmolLM2-135M-Instruct'}: "
          f"guided choice and whole-answer likelihood disagree on {differ}/{len(both)} ({differ / max(1, len(both)):.1%})")
    multi = [(a, b) for a, b, x in both if len(x["steps"]) > 10]
    if multi:
        print(f"  on items with more than 10 steps (two-digit answers possible): "
              f"{sum(a != b for a, b in multi)}/{len(multi)}")
    for mode, column in (("likelihood", 0), ("guided", 1)):
        exact = sum(p[column] == x["label"] for p, x in zip(((a, b) for a, b, _ in both), (x for _, _, x in both)))
        print(f"  {mode:10s}: exact first-error accuracy {exact / max(1, len(both)):.3f}, "
              f"answers -1 on {sum(p == -1 for p in picks[mode]) / len(items):.1%}")


if __name__ == "__main__":  # vLLM starts worker processes: the guard is required
    main()
