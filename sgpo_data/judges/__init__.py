"""Step judges, chosen by name: `get_judge("llm", backend, {"constrained": True})`, `get_judge("arith")`,
`get_judge("cascade", backend, {"judges": ["arith", "llm"]})`. `backend` is an engine or a function that loads
one: judges load it at their first request, so a judge that decides locally never does. `policy` is the policy's
engine, for judges that sample from it (mc); they fall back to `backend` without one."""

from __future__ import annotations

from collections.abc import Callable

from sgpo_data.backends.base import Backend
from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.judges.cascade import CascadeOptions
from sgpo_data.judges.labels import LabelsOptions
from sgpo_data.judges.llm_judge import LLMJudgeOptions
from sgpo_data.judges.mc import MCOptions
from sgpo_data.judges.noisy import NoisyOptions
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.judges.prm import PRMOptions
from sgpo_data.registry import Registry

JUDGES: Registry[Judge] = Registry("judge")


@JUDGES.register("llm", options=LLMJudgeOptions)
def _llm(engine, options: LLMJudgeOptions, policy=None) -> Judge:
    """An LLM on the judge's backend names the first wrong step, guided by the reference solution."""
    from sgpo_data.judges.llm_judge import LLMJudge

    return LLMJudge(engine, options)


@JUDGES.register("arith")
def _arith(engine, options, policy=None) -> Judge:
    """Checks every written calculation (`a + b = c`) exactly; no model."""
    from sgpo_data.judges.arith import ArithJudge

    return ArithJudge()


@JUDGES.register("chain")
def _chain(engine, options, policy=None) -> Judge:
    """Checks each step of a running-total chain (the experiment's task) exactly; no model."""
    from sgpo_data.judges.chain import ChainJudge

    return ChainJudge()


@JUDGES.register("prm", options=PRMOptions)
def _prm(engine, options: PRMOptions, policy=None) -> Judge:
    """A process reward model scores every step; the first below the threshold is the error."""
    from sgpo_data.judges.prm import PRMJudge

    return PRMJudge(options)


@JUDGES.register("labels", options=LabelsOptions)
def _labels(engine, options: LabelsOptions, policy=None) -> Judge:
    """Reads the first error from a column of the data (human or earlier labels)."""
    from sgpo_data.judges.labels import LabelsJudge

    return LabelsJudge(options)


@JUDGES.register("mc", options=MCOptions)
def _mc(engine, options: MCOptions, policy=None) -> Judge:
    """Monte-Carlo: continuations sampled from each prefix; the first prefix that cannot reach the answer is the error."""
    from sgpo_data.judges.mc import MCJudge

    return MCJudge(policy or engine, options)


@JUDGES.register("cascade", options=CascadeOptions)
def _cascade(engine, options: CascadeOptions, policy=None) -> Judge:
    """Judges in order; the first that finds an error decides (cheap local checks before an LLM)."""
    from sgpo_data.judges.cascade import CascadeJudge

    judges = []
    for position, name in enumerate(options.judges):
        if name == "cascade":
            raise SgpoError("judge.options.judges: a cascade cannot contain a cascade")
        JUDGES.check(name, f"judge.options.judges[{position}]")
        judges.append(get_judge(name, engine, options.options.get(name), f"judge.options.options.{name}", policy))
    for name, judge in zip(options.judges[:-1], judges[:-1]):
        if type(judge).decide is Judge.decide:
            raise SgpoError(f"judge.options.judges: {name!r} needs an engine, so it can only be the last judge of a "
                            f"cascade; put the local checks (arith) first")
    return CascadeJudge(judges)


@JUDGES.register("noisy", options=NoisyOptions)
def _noisy(engine, options: NoisyOptions, policy=None) -> Judge:
    """Another judge with its verdicts replaced at random with probability p: a judge of known quality."""
    from sgpo_data.judges.noisy import NoisyJudge

    if options.judge == "noisy":
        raise SgpoError("judge.options.judge: a noisy judge cannot wrap another noisy judge")
    JUDGES.check(options.judge, "judge.options.judge")
    inner = get_judge(options.judge, engine, options.options, "judge.options.options", policy)
    return NoisyJudge(inner, options.p, options.seed)


def get_judge(name: str, backend: Backend | Callable[[], Backend] | None = None, options: dict | None = None,
              key: str = "judge.options", policy: Backend | Callable[[], Backend] | None = None) -> Judge:
    """The judge `name` on `backend`, its options validated by the judge's own model."""
    engine, policy = ((lambda b=b: b) if isinstance(b, Backend) else b for b in (backend, policy))
    return JUDGES.get(name, engine=engine, options=JUDGES.options(name, options, key), policy=policy)


__all__ = ["JUDGES", "Judge", "JudgeInput", "Verdict", "get_judge", "parse_first_error"]
