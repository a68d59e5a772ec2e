"""The non-LLM stages at scale: N synthetic judged-ready rollouts through judge (`labels`, which includes
segmentation), score and export on the command line, each against a bare polars/pyarrow script doing the same
work in the same run. Prints rows/s, peak RSS and the ratio for every stage, and grading pairs/s.

    python benchmarks/scale.py --rows 100000 --out /tmp/scale-100k
    python benchmarks/scale.py --rows 1000000 --out /tmp/scale-1m [--reuse]

The rollouts: groups of 8, responses of 3-8 paragraphs (600-700 characters), about 200 response token ids and
log-probs per row, a `label` column with each row's first-error index for the `labels` judge. They are written
as a complete generate stage (shards of `--shard-rows`), so the run folder is what `sgpo-data generate` leaves.
Peak RSS is the child process's maximum resident set, from /usr/bin/time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

G = 8
WORDS = ("then", "so", "we", "add", "the", "total", "is", "each", "of", "left", "more", "gives", "after", "which")


def synthesize(n: int, seed: int) -> pa.Table:
    """n rollouts (n a multiple of G) with every generate column and a `label`."""
    from sgpo_data.schema import GENERATE_FIELDS, INPUT_FIELDS

    rng = np.random.default_rng(seed)
    groups = n // G
    prompt_ids = np.repeat(np.array([f"p{seed}-{i:08d}" for i in range(groups)], dtype=object), G)
    n_steps = rng.integers(3, 9, size=n)
    words = np.array(WORDS, dtype=object)
    responses = []
    for k in n_steps:
        per_step = 660 // k
        paragraphs = []
        for j in range(k):
            a, b = rng.integers(2, 99, size=2)
            text = " ".join(rng.choice(words, size=max(1, per_step // 6 - 4)))
            paragraphs.append(f"Step {j + 1}: {text} {a} + {b} = {a + b}.")
        responses.append("\n\n".join(paragraphs) + f"\n\nThe answer is {rng.integers(1, 999)}.")
    correct = rng.random(n) < 0.15
    labels = np.where(correct, -1, rng.integers(0, 1 << 30, size=n) % (n_steps + 1) - 1)
    tokens = 200
    ids = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * tokens),
                                   pa.array(rng.integers(0, 49152, size=n * tokens, dtype=np.int32)))
    logprobs = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * tokens),
                                        pa.array(-rng.exponential(0.5, size=n * tokens).astype(np.float32)))
    columns = {
        "prompt_id": pa.array(prompt_ids, pa.string()),
        "problem": pa.array([f"Problem {p}: how many are left?" for p in prompt_ids], pa.string()),
        "reference_solution": pa.repeat(pa.scalar("Add, then subtract.\n\nThe answer is 7.", pa.string()), n),
        "reference_answer": pa.repeat(pa.scalar("7", pa.string()), n),
        "data_source": pa.repeat(pa.scalar("synthetic", pa.string()), n),
        "sample_idx": pa.array(np.tile(np.arange(G, dtype=np.int32), groups)),
        "response": pa.array(responses, pa.string()),
        "finish_reason": pa.repeat(pa.scalar("stop", pa.string()), n),
        "policy_model": pa.repeat(pa.scalar("synthetic-policy", pa.string()), n),
        "prompt_tokens": pa.repeat(pa.scalar(60, pa.int32()), n),
        "response_tokens": pa.repeat(pa.scalar(tokens, pa.int32()), n),
        "response_logprobs": logprobs,
        "response_token_ids": ids,
        "pred_answer": pa.array(np.where(correct, "7", "8"), pa.string()),
        "is_correct": pa.array(correct),
        "grade_status": pa.repeat(pa.scalar("ok", pa.string()), n),
        "generate_status": pa.repeat(pa.scalar("ok", pa.string()), n),
        "generate_error_kind": pa.nulls(n, pa.string()),
        "generate_error": pa.nulls(n, pa.string()),
    }
    schema = pa.schema([*INPUT_FIELDS, *GENERATE_FIELDS, pa.field("label", pa.int32())])
    return pa.table({**columns, "label": pa.array(labels.astype(np.int32))}, schema=schema)


def write_generate_stage(run: Path, n: int, shard_rows: int) -> None:
    """A complete generate stage of n synthetic rows, as the generate stage writes one."""
    from sgpo_data.config import Recipe
    from sgpo_data.pipeline.folder import StageFolder

    recipe = Recipe().model_dump()
    shards = (n + shard_rows - 1) // shard_rows
    folder = StageFolder(run, "generate")
    folder.start({k: recipe[k] for k in ("data", "generate", "grader")}, f"synthetic-{n}", num_shards=shards)
    for i in range(shards):
        rows = min(shard_rows, n - i * shard_rows)
        folder.write_shard(i, synthesize(rows, seed=i), f"in-{i}", {})
    folder.finish({i: f"in-{i}" for i in range(shards)}, lambda markers: {"responses": n})


def measured(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of a child process."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    rss = next(int(line.split("=")[1]) for line in result.stderr.splitlines() if line.startswith("maxrss_kb="))
    return seconds, rss / 1024**2


CLI = [str(Path(sys.executable).parent / "sgpo-data")]  # the installed command
PY = [sys.executable, "-c"]

BARE_SEGMENT = """
import sys, polars as pl
df = pl.scan_parquet(sys.argv[1] + '/generate/part-*.parquet').select('response').collect()
steps = df['response'].str.split('\\n\\n')
print(steps.list.len().sum())
"""
BARE_SCORE = """
import sys, polars as pl
df = pl.scan_parquet(sys.argv[1] + '/judge/part-*.parquet').collect()  # every column: the stage writes them all
k, n = pl.col('first_error_step'), pl.col('steps').list.len()
df = df.with_columns(rts=pl.when(pl.col('is_correct')).then(None).otherwise(k.clip(0) / n))
df = df.with_columns(reward=pl.when(pl.col('is_correct')).then(1.0).otherwise(1 / (1 + (-5 * (pl.col('rts') - 0.5)).exp())))
df = df.with_columns(advantage=(pl.col('reward') - pl.col('reward').mean().over('prompt_id'))
                     / (pl.col('reward').std().over('prompt_id') + 1e-4))
df.write_parquet(sys.argv[2])
"""
BARE_EXPORT = """
import sys, glob, pyarrow.parquet as pq
for path in sorted(glob.glob(sys.argv[1] + '/export/*/train-*.parquet')):
    pq.write_table(pq.read_table(path), sys.argv[2] + '/' + path.split('/')[-2] + '.parquet')
"""


def segmentation(run: Path) -> tuple[float, float]:
    """Rows/s of the paragraph segmenter (`split_many`, as the judge stage calls it) and of polars' `str.split` on
    the same responses, part by part, in this process."""
    import polars as pl
    import pyarrow.parquet as pq

    from sgpo_data.segmenters import get_segmenter

    segmenter, rows, ours, bare = get_segmenter("paragraph"), 0, 0.0, 0.0
    for part in sorted((run / "generate").glob("part-*.parquet")):
        responses = pq.read_table(part, columns=["response"])["response"]
        start = time.perf_counter()
        segmenter.split_many(responses)
        middle = time.perf_counter()
        pl.from_arrow(responses).str.split("\n\n")
        ours, bare, rows = ours + middle - start, bare + time.perf_counter() - middle, rows + len(responses)
    return rows / ours, rows / bare


def grading(pairs: int, seed: int = 0) -> tuple[float, float]:
    """(pairs/s, share of pairs math-verify had to decide) of the math_verify grader on a mix like a run's: groups
    of 8 samples per reference (so references repeat), 30 % exact answers, 30 % equivalent rewritings (1,000 for
    1000, 3/4 or 0.75 for \\frac{3}{4}, \\pi*3 for 3\\pi, \\sqrt 5 for \\sqrt{5}), 40 % wrong answers drawn from a small pool."""
    from sgpo_data.graders import get_grader
    from sgpo_data.graders.math_verify_grader import fast_verdict

    rng = np.random.default_rng(seed)
    references, predictions = [], []
    for _ in range(pairs // G):
        a, b = (int(x) for x in rng.integers(2, 60, size=2))
        kind = rng.choice(["int", "frac", "pi", "sqrt"], p=[0.5, 0.2, 0.15, 0.15])
        reference, rewritten = {"int": (str(a * 100), f"{a * 100 // 1000},{a * 100 % 1000:03d}" if a >= 10 else str(a * 100)),
                                "frac": (f"\\frac{{{a}}}{{{a + b}}}", f"{a}/{a + b}"),
                                "pi": (f"{a}\\pi", f"\\pi \\cdot {a}"),
                                "sqrt": (f"\\sqrt{{{a}}}", f"\\sqrt {a}")}[kind]
        for _ in range(G):
            r = rng.random()
            answer = reference if r < 0.3 else rewritten if r < 0.6 else str(rng.integers(1, 40))
            references.append(reference)
            predictions.append(f"So the result is \\boxed{{{answer}}}.")
    with get_grader("math_verify") as grader:
        grader.grade(predictions[:G], references[:G])  # the workers are started
        grader._cache.clear()
        start = time.perf_counter()
        results = grader.grade(predictions, references)
        seconds = time.perf_counter() - start
    slow = sum(fast_verdict(ref, r.pred_answer) is None for ref, r in zip(references, results))
    return pairs / seconds, slow / pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shard-rows", type=int, default=8192)
    ap.add_argument("--grading-pairs", type=int, default=2000)
    ap.add_argument("--reuse", action="store_true", help="keep OUT's synthesised rollouts (same --rows) and redo the rest")
    args = ap.parse_args()
    n = args.rows - args.rows % G
    run, bare = args.out / "run", args.out / "bare"
    kept = args.reuse and (json.loads(m.read_text())["rows"] == n
                           if (m := run / "generate" / "manifest.json").is_file() else False)
    for path in [run / "judge", run / "score", run / "export", run / "cache", bare] if kept else [args.out]:
        shutil.rmtree(path, ignore_errors=True)
    bare.mkdir(parents=True)
    if not kept:
        start = time.perf_counter()
        write_generate_stage(run, n, args.shard_rows)
        print(f"synthesised {n} rollouts in {time.perf_counter() - start:.1f} s", flush=True)
    overrides = ["--set", "judge.name=labels", "--set", "judge.options.column=label"]
    stages = [
        ("judge (labels, segmentation)", CLI + ["judge", "--out", str(run), *overrides],
         PY + [BARE_SEGMENT, str(run)]),
        ("score", CLI + ["score", "--out", str(run), *overrides], PY + [BARE_SCORE, str(run), str(bare / "score.parquet")]),
        ("export (all views, DatasetDict, card)", CLI + ["export", "--out", str(run), *overrides],
         PY + [BARE_EXPORT, str(run), str(bare)]),
    ]
    results = []
    for name, ours, baseline in stages:
        seconds, rss = measured(ours)
        bare_seconds, bare_rss = measured(baseline)
        results.append({"stage": name, "rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                        "peak_rss_gb": round(rss, 2), "bare_seconds": round(bare_seconds, 2),
                        "bare_peak_rss_gb": round(bare_rss, 2), "ratio": round(seconds / bare_seconds, 2)})
        print(json.dumps(results[-1]), flush=True)
    seg, seg_bare = segmentation(run)
    print(f"segmentation: {seg:,.0f} rows/s (split_many); polars str.split: {seg_bare:,.0f} rows/s")
    pairs_per_s, slow = grading(args.grading_pairs)
    print(f"grading: {pairs_per_s:.0f} pairs/s ({args.grading_pairs} pairs, 30 % exact, 30 % rewritten, 40 % wrong; "
          f"{slow:.0%} left to math-verify)")
    print("\n| stage | rows | seconds | rows/s | peak RSS | bare script | ratio |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['peak_rss_gb']} GB | "
              f"{r['bare_seconds']} s, {r['bare_peak_rss_gb']} GB | {r['ratio']} |")
    (args.out / "results.json").write_text(json.dumps({"stages": results, "grading_pairs_per_s": pairs_per_s,
                                                       "grading_share_to_math_verify": slow,
                                                       "segmentation_rows_per_s": seg,
                                                       "segmentation_bare_rows_per_s": seg_bare}, indent=2))


if __name__ == "__main__":
    main()
