"""Settings of `sgpo-data experiment`, typed once: pydantic models that reject unknown keys, the `cpu` and `gpu`
presets, the `--quick` variant of each, and `key=value` overrides (`rl.lr=3e-4`, `settings.main.arms=[grpo,sgpo]`).

Arms differ only in the reward: `grpo` (the 0/1 outcome), `sgpo` (SGPO with the exact `chain` judge),
`noisy_<p>` (SGPO with the `noisy` judge around it: each first error replaced by a uniformly random step with
probability p) and `step` (SGPO with `score.reward_map=step`: the same credit for every wrong response).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sgpo_data.config import _Strict, apply_overrides
from sgpo_data.errors import SgpoError


def noisy_p(arm: str) -> float | None:
    """p of a `noisy_<p>` arm (None for the other arms); an unknown arm or a p outside [0, 1] is an SgpoError."""
    if arm in ("grpo", "sgpo", "step"):
        return None
    if arm.startswith("noisy_"):
        try:
            p = float(arm[len("noisy_"):])
        except ValueError:
            p = None
        if p is None or not 0.0 <= p <= 1.0:
            raise SgpoError(f"arm {arm!r}: the noisy judge's p must be a number in [0, 1], e.g. noisy_0.5")
        return p
    raise SgpoError(f"unknown arm {arm!r}; valid arms: grpo, sgpo, step, noisy_<p> with p in [0, 1]")


class TaskPreset(_Strict):
    modulus: int = Field(100, ge=10, description="values are taken modulo this; an answer is one of `modulus` values")
    ops: str = Field("+", pattern=r"^[+\-*]+$", description="operations drawn for each step: any of + - *")
    min_ops: int = Field(3, ge=1, description="fewest operations (steps) in a chain")
    max_ops: int = Field(8, ge=1, description="most operations in a chain")

    @model_validator(mode="after")
    def _lengths(self) -> TaskPreset:
        if self.min_ops > self.max_ops:
            raise ValueError(f"min_ops {self.min_ops} is above max_ops {self.max_ops}")
        return self


class ModelPreset(_Strict):
    d_model: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    rotary: bool = Field(True, description="rotary positions on top of the learned ones")

    @model_validator(mode="after")
    def _heads(self) -> ModelPreset:
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(f"d_model {self.d_model} must split into {self.heads} heads of an even width")
        return self


class WarmupPreset(_Strict):
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the supervised warm-up")
    batch: int = Field(64, ge=1, description="chains per warm-up step")
    competence: float = Field(0.6, gt=0, le=1, description="the first phase (right chains) ends once greedy "
                              "accuracy on the warm-up's own problems reaches this")
    restart_after: int = Field(1500, ge=1, description="first-phase steps after which a policy still below half the "
                               "competence starts afresh from a new initialisation")
    max_steps: int = Field(6000, ge=0, description="the first phase ends here even if competence is not reached")
    check_every: int = Field(100, ge=1, description="first-phase steps between checks of competence")
    slip_steps: int = Field(300, ge=0, description="second phase, per setting: steps on a weak solver's chains")


class SettingPreset(_Strict):
    slip: float = Field(ge=0, le=1, description="the weak solver of the warm-up's second phase forgets the carries "
                        "of a step with this probability: the knob of the initial success")
    arms: list[str] = Field(min_length=1, description="arms run in this setting, each on every seed")

    @field_validator("arms")
    @classmethod
    def _known(cls, arms: list[str]) -> list[str]:
        for arm in arms:
            try:
                noisy_p(arm)
            except SgpoError as exc:
                raise ValueError(str(exc)) from None
        if len(set(arms)) != len(arms):
            raise ValueError("an arm is listed twice")
        return arms


class RLPreset(_Strict):
    steps: int = Field(300, ge=1, description="policy updates per arm and seed")
    prompts: int = Field(16, ge=1, description="prompts per update")
    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt at temperature 1")
    lr: float = Field(3e-4, gt=0)
    kl_coef: float = Field(0.0, ge=0, description="weight of the k3 KL to the warmed-up policy")
    clip_eps: float = Field(0.2, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "dr_grpo"] = "token_mean"
    eval_every: int = Field(25, ge=1, description="updates between evaluations on the held-out problems")
    eval_problems: int = Field(512, ge=1, description="held-out problems, balanced over chain lengths")


class ExperimentPreset(_Strict):
    task: TaskPreset = TaskPreset()
    model: ModelPreset = ModelPreset()
    warmup: WarmupPreset = WarmupPreset()
    rl: RLPreset = RLPreset()
    score: dict = Field({"scope": "all_negative_groups"}, description="the SGPO arms' `score:` section (reward map, "
                        "beta, gamma, scope, ...); partial credit only where GRPO has no signal, by default, so that "
                        "the arms differ from GRPO only in all-negative groups")
    settings: dict[str, SettingPreset] = Field(
        {"main": SettingPreset(slip=0.9, arms=["grpo", "sgpo", "noisy_0.25", "noisy_0.5", "noisy_1",
                                                         "step"]),
         "control": SettingPreset(slip=0.0, arms=["grpo", "sgpo"])},
        min_length=1, description="settings by name; each warms up to its own initial success")
    seeds: int = Field(5, ge=1, description="seeds 0..N-1 (policy init, problems and sampling), the same for every arm")
    target_gain: float = Field(0.25, gt=0, lt=1, description="steps to target: first evaluation where accuracy is "
                               "at least the seed's initial accuracy plus this")
    workers: int = Field(2, ge=1, description="processes running arms side by side (1: in this process)")
    threads: int = Field(1, ge=1, description="torch threads per worker")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    grader: Literal["math_verify", "exact"] = Field(
        "math_verify", description="outcome grader inside SGPOReward: the product's math_verify, or `exact` "
        "(string equality of the last line with the answer, no worker process)")
    eval_seed: int = Field(10_000, description="seed of the held-out problems (apart from the training seeds)")


CPU: dict = {}
GPU: dict = {
    "task": {"max_ops": 10},
    "model": {"d_model": 128, "layers": 4, "heads": 4},
    "rl": {"steps": 400, "prompts": 32},
    "seeds": 8, "workers": 12,
}
QUICK: dict[str, dict] = {
    "cpu": {"rl": {"steps": 60, "eval_every": 20, "eval_problems": 256}, "seeds": 2,
            "warmup": {"competence": 0.3, "slip_steps": 150}},
    "gpu": {"rl": {"steps": 100, "eval_every": 25}, "seeds": 2},
}
PRESETS = {"cpu": CPU, "gpu": GPU}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve(preset: str = "cpu", quick: bool = False, seeds: int | None = None,
            overrides: list[str] | dict | None = None) -> ExperimentPreset:
    """The preset, its quick variant if asked, `seeds`, then the overrides, validated; a bad key names itself."""
    if preset not in PRESETS:
        raise SgpoError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    tree = _merge(ExperimentPreset().model_dump(), PRESETS[preset])
    if quick:
        tree = _merge(tree, QUICK[preset])
    if seeds is not None:
        tree["seeds"] = seeds
    if isinstance(overrides, dict):
        tree = _merge(tree, overrides)
    else:
        apply_overrides(tree, overrides or [], example="rl.lr=3e-4")
    try:
        return ExperimentPreset.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        raise SgpoError(f"experiment key {key!r}: {message} (got {str(err.get('input'))[:80]!r})") from None
