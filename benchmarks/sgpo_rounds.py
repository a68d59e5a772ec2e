"""Does SGPO beat GRPO on a real model, and does a weaker judge erase the gain? Rounds of
generate -> judge -> score -> train -> generate with the trained policy, in three arms from the same seeds:

  grpo        trains on `advantage_grpo` (0/1 reward, group-normalised)
  sgpo        trains on `advantage`, first errors from the exact `arith` judge
  sgpo_noisy  trains on `advantage`, arith's first error replaced by a random step with probability --p

Every arm starts from the same policy (the shipped SmolLM2-135M-Instruct unless --model), sees the same fresh
embedded arithmetic problems each round (generator seed 1000 + round) and is evaluated on the same held-out
problems (seed 12345) before training and after every round. Round 1's rollouts come from the common starting
policy, so all arms share them (the noisy arm re-judges them). Generation goes through vLLM's OpenAI-compatible
server, restarted on each round's trained (merged) policy; training is `sgpo-data train`'s offline trainer.

Accuracy is the mean over held-out problems of each problem's share of correct samples, with a 95% bootstrap
interval over problems; each SGPO arm is also compared with GRPO problem by problem (paired bootstrap). The
all-negative share is the share of a round's training groups with no correct response.

2-core CPU (what the README reports):
  python benchmarks/sgpo_rounds.py --out runs/rounds
GPU (one card, larger run):
  python benchmarks/sgpo_rounds.py --out runs/rounds-gpu --vllm-python python --server-args "--dtype bfloat16" \
      --rounds 4 --train-problems 256 --samples 8 --eval-problems 500 --eval-samples 8 --max-new-tokens 512
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
ARMS = ("grpo", "sgpo", "sgpo_noisy")
EVAL_SEED = 12345


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--model", default=None, help="starting policy (default: the shipped SmolLM2-135M-Instruct)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train-problems", type=int, default=24, help="fresh problems per round")
    ap.add_argument("--samples", type=int, default=8, help="G: responses per training problem")
    ap.add_argument("--eval-problems", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--p", type=float, default=0.5, help="noisy arm: probability a first error is replaced")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--server-args", default="--dtype bfloat16 --enforce-eager --max-num-batched-tokens 16384")
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--bootstrap", type=int, default=2000)
    return ap.parse_args(argv)


class Experiment:
    def __init__(self, args: argparse.Namespace):
        from sgpo_data.backends.models import resolve_model

        self.args = args
        self.out: Path = args.out
        self.base = args.model or resolve_model(None)[0]
        self.arms = [a.strip() for a in args.arms.split(",")]
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            sys.exit(f"--arms: unknown arm(s) {sorted(unknown)}; choose from {', '.join(ARMS)}")
        self.seconds: dict[str, float] = {}
        self.results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "eval": {}, "rounds": {}}

    # -- recipes -----------------------------------------------------------------------------------------------

    def recipe(self, url: str, seed: int, problems: int, samples: int, judge: dict | None = None):
        from sgpo_data.config import Recipe

        a = self.args
        return Recipe.model_validate({
            "data": {"source": "arithmetic", "arithmetic": {"num_problems": problems, "min_steps": a.min_steps,
                                                            "max_steps": a.max_steps, "seed": seed}},
            "generate": {"backend": {"name": "openai", "options": {"base_url": url}}, "model": "policy",
                         "sampling": {"num_samples": samples, "temperature": a.temperature, "top_p": 1.0,
                                      "max_new_tokens": a.max_new_tokens, "seed": seed},
                         "max_in_flight": a.max_in_flight, "prompts_per_shard": 16},
            "grader": {"name": "math_verify", "options": {"timeout_s": 5.0, "last_number_fallback": True}},
            "judge": judge or {"name": "arith"},
            "score": {"reward_map": "sigmoid", "beta": 5.0, "gamma": 0.5},
            "export": {"formats": ["parquet"], "views": ["flat"], "card": False},
        })

    def judge_section(self, arm: str) -> dict:
        if arm == "sgpo_noisy":
            return {"name": "noisy", "options": {"judge": "arith", "p": self.args.p, "seed": 0}}
        return {"name": "arith"}

    # -- steps -------------------------------------------------------------------------------------------------

    def timed(self, label: str, fn, *a, **kw):
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

    def serve(self, model: str, name: str):
        from sgpo_data.backends.vllm_server import VLLMServer

        return VLLMServer(model, self.args.vllm_python, self.out / "logs" / f"vllm-{name}.log",
                          args=shlex.split(self.args.server_args))

    def generate(self, run: Path, url: str, seed: int, problems: int, samples: int) -> None:
        from sgpo_data.stages import run_stage

        self.timed("generate", run_stage, "generate", self.recipe(url, seed, problems, samples), run)

    def label(self, run: Path, url: str, seed: int, arm: str) -> dict:
        """judge, score, export of a round's rollouts; the score stage's statistics."""
        from sgpo_data.stages import run_stage

        recipe = self.recipe(url, seed, self.args.train_problems, self.args.samples, self.judge_section(arm))
        self.timed("judge", run_stage, "judge", recipe, run)
        stats = self.timed("score", run_stage, "score", recipe, run).manifest["statistics"]
        self.timed("export", run_stage, "export", recipe, run)
        return stats

    def train(self, run: Path, policy: str, arm: str, out: Path) -> tuple[str, dict]:
        from sgpo_data.config import TrainConfig
        from sgpo_data.errors import SgpoError
        from sgpo_data.train.trainer import train

        a = self.args
        cfg = TrainConfig(data=str(run), model=policy, advantage="grpo" if arm == "grpo" else "sgpo",
                          epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, schedule="constant", lora=not a.full,
                          lora_r=16, lora_alpha=32, max_length=1024, seed=0)
        try:
            summary = self.timed("train", train, cfg, out)
        except SgpoError as exc:  # e.g. every advantage is zero: the policy does not move this round
            return policy, {"skipped": str(exc), "examples": 0, "steps": 0}
        return summary["final_model"], {"examples": summary["examples"], "steps": summary["steps"],
                                        "data": summary["data"]}

    def evaluate(self, url: str, name: str) -> dict:
        run = self.out / "eval" / name
        self.generate(run, url, EVAL_SEED, self.args.eval_problems, self.args.eval_samples)
        per_problem = problem_accuracy(run)
        self.results["eval"][name] = {"per_problem": per_problem.tolist(), **summarise(per_problem, self.args.bootstrap)}
        print(f"[{self.elapsed()}] eval {name}: {self.results['eval'][name]['accuracy']:.3f} "
              f"{self.results['eval'][name]['ci95']}", flush=True)
        return self.results["eval"][name]

    # -- the experiment ----------------------------------------------------------------------------------------

    def run(self) -> dict:
        a = self.args
        self.start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        shared = self.out / "round1-shared"
        with self.serve(self.base, "base") as url:
            self.evaluate(url, "round0")
            self.generate(shared, url, 1001, a.train_problems, a.samples)
        for arm in self.arms:
            policy = self.base
            for r in range(1, a.rounds + 1):
                run = self.out / arm / f"round{r}"
                if r == 1:
                    run.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(shared / "generate", run / "generate", dirs_exist_ok=True)
                stats = self.label(run, "http://unused/v1", 1000 + r, arm)
                policy, trained = self.train(run, policy, arm, self.out / arm / f"train{r}")
                self.results["rounds"].setdefault(arm, {})[r] = {
                    "all_negative_share": stats["all_negative_groups"] / stats["prompts"],
                    "zero_std_groups_grpo": stats.get("zero_std_groups_grpo"),
                    "zero_std_groups_sgpo": stats.get("zero_std_groups_sgpo"),
                    "train_accuracy": stats.get("accuracy"), **trained}
                print(f"[{self.elapsed()}] {arm} round {r}: trained {trained.get('examples')} rows, "
                      f"{trained.get('steps')} steps", flush=True)
                with self.serve(policy, f"{arm}-round{r}") as url:
                    self.evaluate(url, f"{arm}/round{r}")
                    if r < a.rounds:
                        self.generate(self.out / arm / f"round{r + 1}", url, 1000 + r + 1, a.train_problems, a.samples)
        self.compare()
        self.results["seconds"] = {**{k: round(v, 1) for k, v in self.seconds.items()},
                                   "total": round(time.perf_counter() - self.start, 1)}
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2))
        print(table(self.results, self.arms, a.rounds))
        return self.results

    def compare(self) -> None:
        """Each SGPO arm against GRPO, problem by problem, round by round."""
        if "grpo" not in self.arms:
            return
        diffs = self.results.setdefault("vs_grpo", {})
        for arm in (a for a in self.arms if a != "grpo"):
            for r in range(1, self.args.rounds + 1):
                mine = np.array(self.results["eval"][f"{arm}/round{r}"]["per_problem"])
                grpo = np.array(self.results["eval"][f"grpo/round{r}"]["per_problem"])
                diffs.setdefault(arm, {})[r] = summarise(mine - grpo, self.args.bootstrap)

    def elapsed(self) -> str:
        return f"{(time.perf_counter() - self.start) / 60:5.1f} min"


def problem_accuracy(run: Path) -> np.ndarray:
    """Share of correct samples per prompt, in prompt order (an unanswered or ungradable sample is wrong)."""
    import pyarrow.compute as pc

    from sgpo_data.run_reader import read_stage

    table = read_stage(run, "generate").select(["prompt_id", "is_correct"])
    correct = pc.fill_null(table["is_correct"], False).cast(pa.int8())
    grouped = pa.table({"p": table["prompt_id"], "c": correct}).group_by("p", use_threads=False).aggregate([("c", "mean")])
    return np.asarray(grouped["c_mean"].to_numpy(), dtype=float)


def summarise(values: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """Mean and 95% percentile-bootstrap interval over problems."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"accuracy": float(values.mean()), "ci95": [round(float(low), 4), round(float(high), 4)],
            "problems": int(len(values))}


def table(results: dict, arms: list[str], rounds: int) -> str:
    lines = ["| arm | round | accuracy (95% CI) | vs GRPO (95% CI) | all-negative groups | rows trained |",
             "|---|---|---|---|---|---|"]
    base = results["eval"]["round0"]
    lines.append(f"| start | 0 | {_pct(base)} | | | |")
    for arm in arms:
        for r in range(1, rounds + 1):
            ev = results["eval"][f"{arm}/round{r}"]
            diff = results.get("vs_grpo", {}).get(arm, {}).get(r)
            info = results["rounds"][arm][r]
            share = info.get("all_negative_share")
            lines.append(f"| {arm} | {r} | {_pct(ev)} | {_pct(diff, signed=True) if diff else ''} | "
                         f"{'' if share is None else f'{share:.0%}'} | {info.get('examples', 0)} |")
    return "\n".join(lines)


def _pct(s: dict, signed: bool = False) -> str:
    sign = "+" if signed else ""
    low, high = s["ci95"]
    return f"{s['accuracy'] * 100:{sign}.1f} % ({low * 100:{sign}.1f}, {high * 100:{sign}.1f})"


if __name__ == "__main__":
    Experiment(parse_args()).run()
