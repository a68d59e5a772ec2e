"""The SGPO reward as verl's custom reward function.

    custom_reward_function:
      path: <site-packages>/sgpo_data/integrations/verl.py   # or a file that imports from it
      name: compute_score            # verl's naive reward manager: one response per call
      # name: compute_score_batch    # with reward_model.reward_manager=batch: a whole batch per call
      reward_kwargs: {judge: cascade, score: {reward_map: sigmoid}}

Both grade the response against `ground_truth` with the pipeline's grader, judge it if it is wrong, and return
the SGPO reward (the same code as `SGPOReward`). verl 0.9's reward loop calls `compute_score` once per response,
from several threads; the calls are serialised, and each is judged on its own. `extra_info` may carry
`problem`, `reference_solution` and `prompt_id` (the `verl` view writes them); responses with the same
`prompt_id` in a batch form a group (needed only for `judge.scope: all_negative_groups` and the judge's group
mode). `reward_kwargs` are SGPOReward's
arguments; one scorer is kept per distinct set of them.
"""

from __future__ import annotations

import atexit
import json
import threading

from sgpo_data.integrations.reward import SGPOReward

_SCORERS: dict[str, SGPOReward] = {}
_LOCK = threading.Lock()  # verl's reward loop calls compute_score from several executor threads at once


def _scorer(options: str) -> SGPOReward:
    if options not in _SCORERS:
        _SCORERS[options] = SGPOReward(**json.loads(options))
    return _SCORERS[options]


@atexit.register
def close() -> None:
    """Close the scorers (their judge engines and grader workers); called at exit."""
    while _SCORERS:
        _SCORERS.popitem()[1].close()


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **reward_kwargs) -> list[float]:
    """One SGPO reward per response of a verl batch (verl's `batch` reward manager)."""
    infos = [info or {} for info in (extra_infos if extra_infos is not None else [None] * len(solution_strs))]
    with _LOCK:
        return _scorer(json.dumps(reward_kwargs, sort_keys=True)).rewards(
            list(solution_strs), [None if g is None else str(g) for g in ground_truths],
            [str(info.get("prompt_id", f"row-{i}")) for i, info in enumerate(infos)],
            [info.get("problem", "") for info in infos], [info.get("reference_solution") for info in infos])


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> float:
    """The SGPO reward of one response (verl's `naive` reward manager)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **reward_kwargs)[0]
