"""`run_experiment`: the warm-ups and every (setting, arm, seed) run, side by side in `workers` processes, then
the report. The warmed-up policies are kept in `OUT/warmup/` so that every arm of a seed starts from the same
weights; nothing else is written before the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from sgpo_data.experiment.presets import ExperimentPreset, resolve


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _warm_job(preset: dict, seed: int, path: str) -> dict:
    import torch

    from sgpo_data.experiment.loop import Lab, warm_up
    from sgpo_data.experiment.rewards import ArmReward

    cfg = ExperimentPreset.model_validate(preset)
    lab = Lab(cfg)
    reward = ArmReward("grpo", cfg, seed)  # its grader decides success, as in training
    try:
        kept = warm_up(lab, seed, {name: s.slip for name, s in cfg.settings.items()}, reward.exact.grader)
    finally:
        reward.close()
    torch.save({name: k["state"] for name, k in kept.items()}, path)
    return {"seed": seed, **{name: {key: k[key] for key in ("step", "competent_at", "restarts", "eval")}
                              for name, k in kept.items()}}


def _arm_job(preset: dict, setting: str, arm: str, seed: int, path: str) -> dict:
    import torch

    from sgpo_data.experiment.loop import Lab, run_arm

    cfg = ExperimentPreset.model_validate(preset)
    lab = Lab(cfg)
    state = torch.load(path, map_location=lab.device)[setting]
    started = time.perf_counter()
    result = run_arm(lab, arm, seed, state)
    return {"setting": setting, **result, "wall_s": time.perf_counter() - started}


def _run(cfg: ExperimentPreset, tree: dict, paths: dict[int, str], log: Callable[[str], None]) -> tuple[list, list]:
    """The warm-up results and the run results. A seed's runs are queued as soon as its warm-up is done, so the
    workers never wait for the slowest warm-up; with one worker everything runs in this process."""
    def runs_of(seed: int) -> list[tuple]:
        return [(tree, name, arm, seed, paths[seed]) for name, setting in cfg.settings.items() for arm in setting.arms]

    warm, runs = [], []
    if cfg.workers == 1:
        _worker_init(cfg.threads)
        for seed in range(cfg.seeds):
            warm.append(_warm_job(tree, seed, paths[seed]))
            log(_describe(warm[-1]))
        for seed in range(cfg.seeds):
            for args in runs_of(seed):
                runs.append(_arm_job(*args))
                log(_describe(runs[-1]))
        return warm, runs
    with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(cfg.threads,)) as pool:
        pending = {pool.submit(_warm_job, tree, seed, paths[seed]): seed for seed in range(cfg.seeds)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                seed, result = pending.pop(future), future.result()
                log(_describe(result))
                if "arm" in result:
                    runs.append(result)
                else:
                    warm.append(result)
                    pending.update({pool.submit(_arm_job, *args): seed for args in runs_of(seed)})
    order = {(name, arm): i for i, (name, arm) in enumerate((n, a) for n, s in cfg.settings.items() for a in s.arms)}
    runs.sort(key=lambda r: (order[r["setting"], r["arm"]], r["seed"]))
    return sorted(warm, key=lambda w: w["seed"]), runs


def _describe(result: dict) -> str:
    if "arm" not in result:
        return f"warm-up seed {result['seed']}: " + ", ".join(
            f"{name} at step {v['step']}, {v['restarts']} restarts (sampled {v['eval']['sampled_acc']:.3f}, "
            f"greedy {v['eval']['greedy_acc']:.3f})"
            for name, v in result.items() if name != "seed")
    first, last = result["curve"][0], result["curve"][-1]
    end = f", diverged at step {result['diverged_at']}" if result["diverged_at"] is not None else ""
    return (f"{result['setting']} {result['arm']} seed {result['seed']}: greedy {first['greedy_acc']:.3f} -> "
            f"{last['greedy_acc']:.3f}, sampled {first['sampled_acc']:.3f} -> {last['sampled_acc']:.3f} "
            f"({result['wall_s']:.0f} s{end})")


def run_experiment(out: str | Path, preset: str = "cpu", quick: bool = False, seeds: int | None = None,
                   overrides: list[str] | dict | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the grid of `preset` (its quick variant if `quick`; `seeds` and `key=value` overrides on top) and
    write metrics.json, curves.csv and curves.png into `out`; returns the metrics."""
    from sgpo_data.experiment.report import write_report

    cfg = resolve(preset, quick, seeds, overrides)
    log = log or (lambda line: None)
    out = Path(out)
    (out / "warmup").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tree = cfg.model_dump()
    paths = {seed: str(out / "warmup" / f"seed-{seed}.pt") for seed in range(cfg.seeds)}
    warm, runs = _run(cfg, tree, paths, log)
    wall = time.perf_counter() - started
    from sgpo_data.experiment.loop import device_for

    context = {"preset": preset, "quick": quick, "wall_s": round(wall, 1), "device": str(device_for(cfg)),
               "workers": cfg.workers, "threads": cfg.threads, "cpus": os.cpu_count(), "config": tree}
    metrics = write_report(out, cfg, warm, runs, context)
    (out / "config.json").write_text(json.dumps(tree, indent=2))
    return metrics
