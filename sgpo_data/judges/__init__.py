"""Step judges, chosen by name: `get_judge("llm", backend, {"constrained": True})`, `get_judge("arith")`,
`get_judge("cascade", backend, {"judges": ["arith", "llm"]})`. `backend` is an engine or a function that loads
one: judges load it at their first request, so a judge that decides locally never does. `policy` is the policy's
engine, for judges that sample from it (mc); they fall back to `backend` without one.

Each judge is one file of this package that registers itself: `@JUDGES.register("name", options=Options)` on a
factory `(engine, options, policy) -> Judge`."""

from __future__ import annotations

from collections.abc import Callable

from sgpo_data.backends.base import Backend
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict
from sgpo_data.judges.parse import parse_first_error


def get_judge(name: str, backend: Backend | Callable[[], Backend] | None = None, options: dict | None = None,
              key: str = "judge.options", policy: Backend | Callable[[], Backend] | None = None) -> Judge:
    """The judge `name` on `backend`, its options validated by the judge's own model."""
    engine, policy = ((lambda b=b: b) if isinstance(b, Backend) else b for b in (backend, policy))
    return JUDGES.get(name, engine=engine, options=JUDGES.options(name, options, key), policy=policy)


__all__ = ["JUDGES", "Judge", "JudgeInput", "Verdict", "get_judge", "parse_first_error"]
