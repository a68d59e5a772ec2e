"""How well does a step judge find the first wrong step? ProcessBench's metric on its human labels.

ProcessBench (Qwen/ProcessBench; its four subsets as JSON files in a local folder, --data) gives solutions already cut
into steps with the 0-based index of the earliest wrong step (-1: none). Accuracy on the erroneous samples
(exact step), accuracy on the correct ones (answering -1), and their harmonic mean (ProcessBench's F1).
The judge sees no reference solution here (ProcessBench has none), so this measures the judge alone.

    python benchmarks/judge_processbench.py --data DIR --subset gsm8k --limit 100 [--backend openai --model NAME --base-url URL]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from sgpo_data.backends import get_backend
from sgpo_data.judges import JudgeInput, get_judge
from sgpo_data.schema import JudgeStatus



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="folder with ProcessBench's gsm8k.json, math.json, ...")
    parser.add_argument("--subset", default="gsm8k", choices=["gsm8k", "math", "olympiadbench", "omnimath"])
    parser.add_argument("--limit", type=int, default=100, help="a seeded random sample of this many items")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--model", default=None)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--unconstrained", action="store_true", help="free generation + strict parsing")
    args = parser.parse_args()
    items = json.loads((args.data / f"{args.subset}.json").read_text())
    items = random.Random(0).sample(items, min(args.limit, len(items)))
    backend = get_backend(args.backend, args.model, {"base_url": args.base_url} if args.base_url else {})
    judge = get_judge("llm", backend, {"constrained": not args.unconstrained})
    started = time.perf_counter()
    verdicts = judge.judge([JudgeInput(x["problem"], None, x["steps"]) for x in items])
    elapsed = time.perf_counter() - started
    wrong = [(x, v) for x, v in zip(items, verdicts) if x["label"] != -1]
    right = [(x, v) for x, v in zip(items, verdicts) if x["label"] == -1]
    acc_wrong = sum(v.first_error_step == x["label"] for x, v in wrong) / max(1, len(wrong))
    acc_right = sum(v.first_error_step == -1 for x, v in right) / max(1, len(right))
    f1 = 2 * acc_wrong * acc_right / (acc_wrong + acc_right) if acc_wrong + acc_right else 0.0
    failures = sum(v.status != JudgeStatus.OK for v in verdicts)
    always_minus_one = len(right) / len(items)
    print(f"judge {backend.model_name} ({args.backend}, {'constrained' if not args.unconstrained else 'free'}), "
          f"ProcessBench {args.subset}, {len(items)} items ({len(wrong)} with an error)")
    print(f"accuracy on erroneous: {acc_wrong:.3f}  on correct: {acc_right:.3f}  F1: {f1:.3f}  "
          f"parse/engine failures: {failures}  ({elapsed / len(items):.2f} s/item)")
    print(f"baselines: always -1 → F1 0 (accuracy {always_minus_one:.3f}); "
          f"a random index in -1..K-1 → expected accuracy on erroneous "
          f"{sum(1 / (len(x['steps']) + 1) for x, _ in wrong) / max(1, len(wrong)):.3f}")


if __name__ == "__main__":
    main()
