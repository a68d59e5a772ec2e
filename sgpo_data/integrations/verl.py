"""The SGPO reward as verl's custom reward function.

    reward:
      custom_reward_function:
        path: <site-packages>/sgpo_data/integrations/verl.py   # or a file that imports from it
        name: compute_score            # the naive reward manager (verl's default)
        # name: compute_score_batch    # with reward_manager.name=batch: a whole batch per call
        reward_kwargs: {judge: cascade, score: {reward_map: sigmoid}}

Both grade the response against `ground_truth` with the pipeline's grader, judge it if it is wrong, and return
the SGPO reward, through `SGPOReward` and so through the judging core of the judge stage.

`compute_score` is `async`. verl's reward loop awaits one call per response, all of a batch's calls at once, in
each of its reward workers (`reward.num_workers`, 8 by default); the scorer's micro-batcher gathers the calls that
arrive together (`window_s`, 20 ms of quiet, or `max_batch` responses) and judges them as one batch with the
judge's whole window of requests in flight, then answers each call. Responses with the same
`extra_info["prompt_id"]` (the `verl` view writes it) in one batch form a group, so `judge.scope:
all_negative_groups` and the judge's group mode work; a response without one is judged as a group of its own and
counted (`sgpo_no_prompt_id`). verl hands each worker a contiguous chunk of the batch, so a prompt's responses
stay in one worker when the chunk size (responses per step / `reward.num_workers`) is a multiple of
`rollout.n`.

Each call returns a dict: `score` (the reward), and `sgpo_judge_failed` and `sgpo_no_prompt_id` (0 or 1),
which verl keeps as reward extra info. A judge request that fails gives its response the plain outcome reward
(`sgpo_judge_failed` 1); a judge service that is down raises its one-line error, and the step fails.

`reward_kwargs` are `SGPOReward`'s arguments (`judge`, `score`, `grader`, `grader_options`, `window_s`,
`max_batch`, `cache`, ...); one scorer is kept per distinct set of them, per process. A key it does not take, or
that the judge section rejects, is one line naming the key, at the first call, before any request is sent.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import json
import threading

from sgpo_data.errors import SgpoError
from sgpo_data.integrations.reward import Scored, SGPOReward
from sgpo_data.judges.core import Row

_SCORERS: dict[str, SGPOReward] = {}
_CREATING = threading.Lock()  # only the creation of a scorer; its calls need no lock
_LONE = itertools.count()  # groups of their own, for responses without a prompt_id
_TAKES = [name for name in inspect.signature(SGPOReward).parameters if name not in ("engine", "policy")]


def _scorer(reward_kwargs: dict) -> SGPOReward:
    key = json.dumps(reward_kwargs, sort_keys=True, default=str)
    if (scorer := _SCORERS.get(key)) is None:
        with _CREATING:
            if (scorer := _SCORERS.get(key)) is None:
                unknown = [k for k in reward_kwargs if k not in _TAKES]
                if unknown:
                    raise SgpoError(f"custom_reward_function.reward_kwargs: unknown key {unknown[0]!r}; SGPOReward "
                                    f"takes {', '.join(_TAKES)}")
                scorer = _SCORERS[key] = SGPOReward(**reward_kwargs)
    return scorer


@atexit.register
def close() -> None:
    """Close the scorers (their judge engines and grader workers); called at exit."""
    while _SCORERS:
        _SCORERS.popitem()[1].close()


def _row(solution_str: str, ground_truth, extra_info: dict | None) -> tuple[Row, bool]:
    """The response as a row of the judging core, and whether it came without a prompt_id."""
    info = extra_info or {}
    prompt_id = info.get("prompt_id")
    group = ("lone", next(_LONE)) if prompt_id is None else ("prompt", str(prompt_id))
    return Row(info.get("problem") or "", solution_str, None if ground_truth is None else str(ground_truth),
               info.get("reference_solution"), group), prompt_id is None


def _result(scored: Scored, lone: bool) -> dict:
    return {"score": scored.reward, "sgpo_judge_failed": float(scored.judge_failed), "sgpo_no_prompt_id": float(lone)}


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> dict:
    """The SGPO reward of one response (verl's `naive` reward manager), judged with the calls that arrive with
    it: `{"score": reward, "sgpo_judge_failed": 0/1, "sgpo_no_prompt_id": 0/1}`."""
    row, lone = _row(solution_str, ground_truth, extra_info)
    (scored,) = await _scorer(reward_kwargs).ascore_rows([row])
    return _result(scored, lone)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **reward_kwargs) -> list[float]:
    """One SGPO reward per response of a verl batch (verl's `batch` reward manager)."""
    infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    rows = [_row(s, g, info)[0] for s, g, info in zip(solution_strs, ground_truths, infos)]
    return [s.reward for s in _scorer(reward_kwargs).score_rows(rows)]
