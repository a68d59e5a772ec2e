"""Recipes: YAML validated into pydantic models that reject unknown keys; `--set a.b=c` overrides any key.

Every field is documented once, here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sgpo_data.errors import SgpoError


def validate_options(model: type[BaseModel], values: dict, key: str) -> BaseModel:
    """A part's options dict validated by its own model; a bad key is one line naming `key.<field>`."""
    try:
        return model.model_validate(values or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SgpoError(f"invalid recipe key {f'{key}.{field}'!r}: {err['msg']} (got {_short(err.get('input'))})") \
            from None


def _short(value, limit: int = 200) -> str:
    """A value's repr for a one-line message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def identity(options: BaseModel) -> dict:
    """The options that decide what a part produces: fields marked operational (timeouts, retries,
    concurrency) are left out, so changing them never invalidates a stage or its call cache."""
    return options.model_dump(exclude={name for name, f in type(options).model_fields.items()
                                       if (f.json_schema_extra or {}).get("operational")})


def operational(default, **kwargs):
    """A Field that changes how a part runs, never what it produces."""
    return Field(default, json_schema_extra={"operational": True}, **kwargs)


# A {name} placeholder: braces around a plain name that do not follow a word or a LaTeX command (\boxed{answer}).
_PLACEHOLDER = re.compile(r"(?<![\w\\}])\{([A-Za-z_]\w*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ArithmeticConfig(_Strict):
    num_problems: int = Field(12, ge=1, description="how many problems to generate")
    min_steps: int = Field(2, ge=1, description="fewest operations (solution steps before the answer)")
    max_steps: int = Field(4, ge=1, description="most operations")
    seed: int = Field(0, description="generator seed; the same seed gives the same problems")


class ColumnMap(_Strict):
    problem: str = "problem"
    reference_solution: str | None = "solution"
    reference_answer: str | None = "answer"
    prompt_id: str | None = None  # None: hash of the problem text


class DataConfig(_Strict):
    source: str = Field("arithmetic", description="'arithmetic' (embedded), a .jsonl/.json/.parquet/.csv file, or a Hub dataset id")
    preset: Literal["math500", "gsm8k", "processbench"] | None = Field(None, description="column mapping preset")
    columns: ColumnMap | None = Field(None, description="column mapping; overrides the preset")
    split: str = Field("train", description="split of a Hub dataset")
    subset: str | None = Field(None, description="config name of a Hub dataset")
    limit: int | None = Field(None, ge=1, description="keep only the first N prompts")
    arithmetic: ArithmeticConfig = ArithmeticConfig()


class SamplingConfig(_Strict):
    num_samples: int = Field(4, ge=1, description="G: responses per prompt")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0


class GenerateConfig(_Strict):
    backend: str = Field("transformers", description="engine: transformers, or openai (any OpenAI-compatible server)")
    model: str | None = Field(None, description="transformers: local folder, .gguf file or Hub id (None: the shipped "
                              "SmolLM2-135M-Instruct); openai: the model name the server serves")
    backend_options: dict = Field({}, description="the chosen backend's own options (see docs/ARCHITECTURE.md): "
                                  "transformers: device, dtype; openai: base_url, api_key_env, timeout_s, "
                                  "max_retries, vllm_extensions")
    sampling: SamplingConfig = SamplingConfig()
    max_in_flight: int = operational(16, ge=1, description="sequences in flight (prompts x G), for every backend: "
                                     "a forward pass of transformers, concurrent requests x n to a server")
    system_prompt: str | None = None
    prompt_template: str = Field(
        "{problem}\n\nSolve the problem step by step, one step per paragraph, and finish with "
        "\"The answer is <number>.\"",
        description="user message; {problem} is replaced by the problem text",
    )
    prompts_per_shard: int = Field(8, ge=1, description="prompts per output shard (the unit of resume and of --shard)")
    max_refills: int = operational(2, ge=0, description="extra requests for the samples a server left out (fewer choices than n)")

    @field_validator("prompt_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        """Without {problem} every prompt would be sent the same text; any other {name} would be sent literally."""
        if "{problem}" not in template:
            raise ValueError("the template lacks {problem}, so every prompt would get the same text; put {problem} "
                             "where the problem goes")
        if unknown := sorted(set(_PLACEHOLDER.findall(template)) - {"problem"}):
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; the only "
                             "placeholder is {problem} (braces right after a word or LaTeX command, as in "
                             "\\boxed{answer}, are kept as written)")
        return template


class GraderConfig(_Strict):
    name: str = Field("math_verify", description="grader name, see sgpo_data.graders")
    options: dict = Field({}, description="the grader's own options (math_verify: timeout_s, last_number_fallback)")


class JudgeConfig(_Strict):
    name: str = Field("llm", description="judge name: llm, arith, cascade, prm, mc, labels, noisy (see docs/ARCHITECTURE.md)")
    options: dict = Field({}, description="the judge's own options (llm: constrained, max_new_tokens, reference, mode, "
                          "template, template_noref; cascade: judges, options; ...)")
    backend: str = Field("transformers", description="engine of an LLM judge: transformers, openai or vllm (mc "
                         "samples from the generate section's engine instead)")
    model: str | None = Field(None, description="the judge model, as for generate.model")
    backend_options: dict = Field({}, description="the judge backend's own options, as for generate.backend_options")
    segmenter: str = Field("paragraph", description="how a response is cut into steps: paragraph, lines, numbered, sentences")
    segmenter_options: dict = Field({}, description="the segmenter's own options: min_chars, max_steps, think "
                                    "(both, solution, thinking: which part of a <think> response is judged)")
    scope: Literal["wrong", "all_negative_groups", "all"] = Field(
        "wrong", description="which responses are judged: the wrong ones, only the wrong ones of all-negative groups "
        "(cheapest), or every answered one (an audit of right answers reached by a wrong process)")
    max_in_flight: int = operational(8, ge=1, description="judge requests in flight (one sequence each)")


class ScoreConfig(_Strict):
    reward_map: Literal["sigmoid", "linear", "step"] = Field(
        "sigmoid", description="partial credit of a judged wrong response: sigmoid(beta*(rts-gamma)), alpha*rts, "
        "or a fixed step_credit (an ablation that ignores where the error is)"
    )
    beta: float = Field(5.0, gt=0, description="sigmoid slope")
    gamma: float = Field(0.5, ge=0.0, le=1.0, description="sigmoid midpoint in RTS")
    alpha: float = Field(0.5, gt=0.0, lt=1.0, description="slope of the linear map r = alpha * rts")
    step_credit: float = Field(0.5, gt=0.0, lt=1.0, description="the credit of the 'step' map")
    rts: Literal["steps", "chars", "tokens"] = Field(
        "steps", description="what RTS counts before the first error: steps (k/K), characters, or policy tokens"
    )
    tokenizer: str | None = Field(None, description="tokenizer for rts=tokens; None: the generate.model's")
    no_error_rule: Literal["last_step", "all_steps", "no_credit"] = Field(
        "last_step", description="wrong answer but the judge saw no error: the final step is the error (k=K-1), "
        "every step counts as right (k=K), or no partial credit at all"
    )
    scope: Literal["all_wrong", "all_negative_groups"] = Field(
        "all_wrong", description="partial credit for every wrong response, or only inside all-negative groups"
    )
    no_reference: Literal["refuse", "exclude"] = Field(
        "refuse", description="prompts without a reference answer have no outcome: refuse the data (checked when "
        "generate loads the prompts and again by score), or exclude their rows from rewards, advantages, group "
        "counts and the views (they keep grade_status no_reference and are counted)"
    )
    advantage: Literal["group", "batch", "none", "rloo"] = Field(
        "group", description="group std scaling (GRPO, TRL's default), batch std scaling, none (Dr. GRPO), "
        "or the leave-one-out mean baseline (RLOO)"
    )
    eps: float = Field(1e-4, gt=0, description="added to the std (TRL's GRPO convention)")
    std_floor: float = Field(
        1e-3, ge=0, description="the std is at least this, so near-equal float rewards cannot blow advantages up"
    )


class ExportConfig(_Strict):
    formats: list[Literal["parquet", "hf"]] = Field(
        ["parquet", "hf"], min_length=1,
        description="Parquet files per view and split, and/or a DatasetDict per view saved to disk",
    )
    views: list[Literal["flat", "grouped", "prompts", "trl", "verl", "stepwise"]] = Field(
        ["flat", "grouped", "prompts", "trl", "verl", "stepwise"], min_length=1,
        description="flat: every column; grouped: one row per prompt; prompts: one row per prompt for online "
        "trainers (TRL GRPOTrainer); trl: prompt/completion/advantage; verl: verl's RL parquet, one row per prompt; "
        "stepwise: stepwise supervision (PRM data from the judge). The first is the card's default config",
    )
    language: list[str] = Field(["en"], description="the data's languages (ISO 639-1) in the dataset card")
    conversational: bool = Field(True, description="trl view: chat messages (True) or plain text prompt/completion")
    test_size: float = Field(0.0, ge=0.0, lt=1.0, description="share of prompts in the test split (0: train only)")
    split_seed: int = 0
    drop_zero_advantage_groups: bool = Field(False, description="drop groups whose SGPO advantages are all zero")
    only_all_negative: bool = Field(False, description="keep only groups where no response is correct")
    min_response_tokens: int | None = Field(None, ge=0)
    max_response_tokens: int | None = Field(None, ge=1)
    dedupe_within_group: bool = Field(False, description="keep the first of identical responses to one prompt")
    card: bool = Field(True, description="write README.md (dataset card) and plots")
    license: str = Field("apache-2.0", description="license in the dataset card's metadata")

    @field_validator("formats", "views")
    @classmethod
    def _each_once(cls, names: list[str]) -> list[str]:
        """A view listed twice would be written twice into the same files; a format twice is surely a typo."""
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"{', '.join(repeated)} listed more than once; list each name once")
        return names

    @model_validator(mode="after")
    def _bounds_meet(self) -> ExportConfig:
        """Checked here, not at export: a run would otherwise generate, judge and score before finding out."""
        low, high = self.min_response_tokens, self.max_response_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"export.min_response_tokens={low} is above export.max_response_tokens={high}, so "
                             "no response could pass both; lower the min or raise the max")
        return self


class EvalConfig(_Strict):
    num_problems: int = Field(0, ge=0, description="held-out embedded arithmetic problems; 0: no evaluation")
    seed: int = Field(12345, description="generator seed of the held-out problems (keep it apart from the data's)")
    min_steps: int = Field(2, ge=1)
    max_steps: int = Field(4, ge=1)
    every: int = Field(0, ge=0, description="evaluate every N optimizer steps (0: only before and after training)")
    samples: int = Field(1, ge=1, description="k of pass@k; 1 with temperature 0 is greedy accuracy")
    temperature: float = Field(0.0, ge=0.0)
    max_new_tokens: int = Field(256, ge=1)


class TrainConfig(_Strict):
    data: str | None = Field(None, description="a run folder, Parquet file(s) (comma-separated or a glob) or a Hub dataset id")
    hub_config: str | None = Field(None, description="config (view) of a Hub dataset, e.g. trl")
    model: str | None = Field(None, description="Hub id, local folder or .gguf file; None: the shipped SmolLM2")
    advantage: Literal["sgpo", "grpo"] = Field("sgpo", description="train on `advantage` (SGPO) or `advantage_grpo`")
    temperature: float | None = Field(None, gt=0, description="sampling temperature of the data; None: from the run's manifest, else 1")
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(4, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-5, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    clip_eps_low: float = Field(0.2, gt=0, lt=1, description="PPO clip: ratio kept in [1 - low, 1 + high]")
    clip_eps_high: float = Field(0.2, gt=0)
    kl_coef: float = Field(0.0, ge=0, description="weight of the k3 KL to the initial policy; 0: no reference pass")
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "dr_grpo"] = "token_mean"
    max_length: int = Field(1024, ge=8, description="prompt + response tokens")
    overlong: Literal["skip", "truncate"] = Field("skip", description="what to do with a longer sequence (counted)")
    skip_zero_advantage: bool = Field(True, description="drop rows with zero advantage before any forward pass")
    lora: bool = Field(False, description="train a LoRA adapter through peft instead of every weight")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_target_modules: list[str] | str = "all-linear"
    gradient_checkpointing: bool = False
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when torch sees it (bf16 autocast), "
                                                   "else CPU (fp32)")
    packing: Literal["auto", "on", "off"] = Field(
        "auto", description="pack a micro-batch into one row without padding (position_ids restart per sequence); "
        "auto: with flash attention, whose varlen kernels make it pay (other attention builds a mask over the row)")
    logprob_chunk: int = Field(2048, ge=1, description="response positions whose fp32 logits exist at once")
    save_every: int = Field(0, ge=0, description="checkpoint every N optimizer steps (0: only at the end)")
    seed: int = 0
    eval: EvalConfig = EvalConfig()


class RayConfig(_Strict):
    """Where `--executor ray` runs a stage's shards: one actor per engine, each with these resources."""

    address: str | None = Field(None, description="a running cluster (ray://host:10001 or auto); None: start a local one")
    num_actors: int = Field(1, ge=1, description="actors (engines) working through the shards at once")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (e.g. 1 for one vLLM engine per GPU)")


class Recipe(_Strict):
    data: DataConfig = DataConfig()
    generate: GenerateConfig = GenerateConfig()
    grader: GraderConfig = GraderConfig()
    judge: JudgeConfig = JudgeConfig()
    score: ScoreConfig = ScoreConfig()
    export: ExportConfig = ExportConfig()
    train: TrainConfig = TrainConfig()
    ray: RayConfig = RayConfig()


MAX_VALUES, MAX_DEPTH = 100_000, 64  # far beyond any real recipe; a YAML alias bomb or a runaway nesting is not one


def _set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SgpoError(f"--set {_short(dotted, 80)}: {_short(part, 80)} is not a section")
    node[leaf] = value


def apply_overrides(tree: dict, overrides, example: str = "generate.sampling.num_samples=8") -> None:
    """Set each `dotted.key=value` of `overrides` in `tree` (the value parsed as YAML, replacing what was there);
    a malformed item is one line showing `example`."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SgpoError(f"--set {item!r}: expected dotted.key=value, e.g. --set {example}")
        if not all(part.strip() for part in key.split(".")):
            raise SgpoError(f"--set {item!r}: the key {key!r} has an empty part; expected dotted.key=value, e.g. "
                            f"--set {example}")
        _set_dotted(tree, key, _parse_yaml(raw, f"--set {_short(item, 80)}: the value"))


def _parse_yaml(text: str, where: str):
    """`text` parsed as YAML; any failure of the parser (syntax, a tag it will not build, an integer too long to
    convert, nesting too deep for it) is one line naming `where`."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise SgpoError(f"{where} is nested too deeply to be a recipe; a recipe is a few levels of sections and keys") \
            from None
    except Exception as exc:  # yaml.YAMLError, and the ValueError of a constructor (e.g. a 5000-digit number)
        mark = getattr(exc, "problem_mark", None)
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem and mark is not None:
            detail = f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}"
        else:
            detail = next(iter(str(exc).strip().splitlines()), type(exc).__name__)
        raise SgpoError(f"{where} is not valid YAML: {detail}") from None


def _check_size(tree, where: str) -> None:
    """Refuse a tree that would expand past MAX_VALUES values or MAX_DEPTH levels (YAML aliases are counted each
    time they are used, so a "billion laughs" document is refused after MAX_VALUES steps, not expanded)."""
    stack, count = [(tree, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SgpoError(f"{where} expands to more than {MAX_VALUES} values (YAML anchors and aliases nested in "
                            "each other?); write the recipe out plainly")
        if depth > MAX_DEPTH:
            raise SgpoError(f"{where} is nested more than {MAX_DEPTH} levels deep; a recipe is a few levels of "
                            "sections and keys")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend((child, depth + 1) for child in node)


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (or the defaults), apply `key=value` overrides, validate."""
    tree: dict = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8") if path.is_file() else None
        except UnicodeDecodeError as exc:
            raise SgpoError(f"recipe {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 "
                            "YAML") from None
        except OSError as exc:  # unreadable, or a name too long for the filesystem
            raise SgpoError(f"recipe {str(path)[:200]} could not be read ({exc.strerror or exc}); check the file") \
                from None
        if text is None:
            raise SgpoError(f"recipe {path} not found; pass an existing YAML file (see recipes/)")
        tree = _parse_yaml(text, f"recipe {path}") or {}
        if not isinstance(tree, dict):
            raise SgpoError(f"recipe {path} must be a mapping of sections (data, generate, judge, ...)")
    apply_overrides(tree, overrides)
    _check_size(tree, ("defaults" if path is None else f"recipe {path}") + (" with --set" if overrides else ""))
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SgpoError(f"{where}: invalid recipe key {key!r}: {err['msg']} (got {_short(err.get('input'))})") \
            from None
