"""Recipes: YAML validated into pydantic models that reject unknown keys; `--set a.b=c` overrides any key.

Every field is documented once, here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

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
        raise SgpoError(f"invalid recipe key {f'{key}.{field}'!r}: {_message(err)} (got {_short(err.get('input'))})") \
            from None


def _message(error: dict) -> str:
    """A pydantic error's message without pydantic's "Value error, " prefix to our own rules' messages."""
    return error["msg"].removeprefix("Value error, ")


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


# Where each kind of part is registered. The registries are the only lists of names: a recipe's names are checked
# against them when it loads, so a part registered by any imported module (a test's toy judge) is valid at once.
REGISTRIES = {
    "backend": ("sgpo_data.backends", "BACKENDS"),
    "grader": ("sgpo_data.graders", "GRADERS"),
    "segmenter": ("sgpo_data.segmenters", "SEGMENTERS"),
    "judge": ("sgpo_data.judges", "JUDGES"),
    "view": ("sgpo_data.export.views", "VIEWS"),
}


def registry(kind: str):
    """The registry of one kind of part (imported on first use: `import sgpo_data.config` stays light)."""
    import importlib

    module, attribute = REGISTRIES[kind]
    return getattr(importlib.import_module(module), attribute)


class Part(_Strict):
    """A part chosen by name from its registry, with the part's own options. In a recipe: `{name: ..., options:
    {...}}`, or just the name. The options are validated by the part's own model when the recipe loads."""

    kind: ClassVar[str]
    name: str
    options: dict = Field({}, description="the part's own options (the reference lists each part's)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"name": value} if isinstance(value, str) else value

    def resolve(self, key: str) -> BaseModel:
        """The options, validated by the part's model; an unknown name or a bad option is one line naming `key`."""
        parts = registry(self.kind)
        parts.check(self.name, f"{key}.name")
        return parts.options(self.name, self.options, f"{key}.options")


class BackendPart(Part):
    kind = "backend"


class SegmenterPart(Part):
    kind = "segmenter"


class ViewPart(Part):
    kind = "view"


class ArithmeticConfig(_Strict):
    num_problems: int = Field(12, ge=1, description="how many problems to generate")
    min_steps: int = Field(2, ge=1, description="fewest operations (solution steps before the answer)")
    max_steps: int = Field(4, ge=1, description="most operations")
    seed: int = Field(0, description="generator seed; the same seed gives the same problems")

    @model_validator(mode="after")
    def _steps_meet(self) -> ArithmeticConfig:
        """`min_steps` is at most `max_steps`."""
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps={self.min_steps} is above max_steps={self.max_steps}; lower min_steps or "
                             "raise max_steps")
        return self


class ColumnMap(_Strict):
    problem: str = Field("problem", description="the column holding the question")
    reference_solution: str | None = Field("solution", description="the worked solution that guides the judge (null: none)")
    reference_answer: str | None = Field("answer", description="the final answer the grader compares against (null: none)")
    prompt_id: str | None = Field(None, description="a stable id per problem (null: a hash of the problem text)")


class DataConfig(_Strict):
    source: str = Field("arithmetic", description="'arithmetic' (embedded), a .jsonl/.json/.parquet/.csv file, or a Hub dataset id")
    preset: str | None = Field(None, description="a column mapping preset (sgpo_data.data.loader.PRESETS)")
    columns: ColumnMap | None = Field(None, description="column mapping; overrides the preset")
    split: str = Field("train", description="split of a Hub dataset")
    subset: str | None = Field(None, description="config name of a Hub dataset")
    limit: int | None = Field(None, ge=1, description="keep only the first N prompts")
    arithmetic: ArithmeticConfig = ArithmeticConfig()

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str | None) -> str | None:
        """`preset` is one of the loader's presets (the error lists them)."""
        from sgpo_data.data.loader import PRESETS

        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}, or set data.columns")
        return preset


class SamplingConfig(_Strict):
    num_samples: int = Field(4, ge=1, description="G: responses per prompt")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (the trainer reads it back for its ratios)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling threshold")
    max_new_tokens: int = Field(256, ge=1, description="length budget of a response")
    seed: int = Field(0, description="sampling seed; each prompt's seed derives from it and the prompt id")


class GenerateConfig(_Strict):
    backend: BackendPart = Field(BackendPart(name="transformers"), description="the engine that samples the policy")
    model: str | None = Field(None, description="a local folder, .gguf file or Hub id (None: the shipped "
                              "SmolLM2-135M-Instruct); for a server, the model name it serves")
    sampling: SamplingConfig = SamplingConfig()
    max_in_flight: int = operational(16, ge=1, description="sequences in flight (prompts x G), for every backend: "
                                     "a forward pass of transformers, concurrent requests x n to a server")
    system_prompt: str | None = Field(None, description="a system message before each prompt (null: none)")
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
        """`prompt_template` holds `{problem}` and no other `{name}` placeholder.

        Without {problem} every prompt would be sent the same text; any other {name} would be sent literally."""
        if "{problem}" not in template:
            raise ValueError("the template lacks {problem}, so every prompt would get the same text; put {problem} "
                             "where the problem goes")
        if unknown := sorted(set(_PLACEHOLDER.findall(template)) - {"problem"}):
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; the only "
                             "placeholder is {problem} (braces right after a word or LaTeX command, as in "
                             "\\boxed{answer}, are kept as written)")
        return template


class GraderConfig(Part):
    """The outcome grader: it extracts each response's answer and compares it with the reference."""

    kind = "grader"
    name: str = Field("math_verify", description="a grader (see [graders](#graders))")


class JudgeConfig(Part):
    """The step judge (`name`, `options`), the engine an LLM judge runs on, and how responses are cut into steps."""

    kind = "judge"
    name: str = Field("llm", description="a judge (see [judges](#judges))")
    backend: BackendPart = Field(BackendPart(name="transformers"), description="the engine of a judge that asks a "
                                 "model (mc samples from the generate section's engine instead)")
    model: str | None = Field(None, description="the judge model, as for generate.model")
    segmenter: SegmenterPart = Field(SegmenterPart(name="paragraph"), description="how a response is cut into steps")
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
    scope: Literal["wrong", "all_negative_groups"] = Field(
        "wrong", description="partial credit for every wrong response, or only inside all-negative groups"
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
    views: list[ViewPart] = Field(
        [ViewPart(name=n) for n in ("flat", "grouped", "prompts", "trl", "verl", "stepwise")], min_length=1,
        description="the views to write, each a name or {name, options}; the first is the card's default config",
    )
    language: list[str] = Field(["en"], description="the data's languages (ISO 639-1) in the dataset card")
    test_size: float = Field(0.0, ge=0.0, lt=1.0, description="share of prompts in the test split (0: train only)")
    split_seed: int = Field(0, description="seed of the prompts chosen for the test split")
    drop_zero_advantage_groups: bool = Field(False, description="drop groups whose SGPO advantages are all zero")
    only_all_negative: bool = Field(False, description="keep only groups where no response is correct")
    min_response_tokens: int | None = Field(None, ge=0, description="drop shorter responses from the views")
    max_response_tokens: int | None = Field(None, ge=1, description="drop longer responses from the views")
    dedupe_within_group: bool = Field(False, description="keep the first of identical responses to one prompt")
    card: bool = Field(True, description="write README.md (dataset card) and plots")
    license: str = Field("apache-2.0", description="license in the dataset card's metadata")

    @field_validator("formats", "views")
    @classmethod
    def _each_once(cls, items: list) -> list:
        """Each format and each view is listed once.

        A view listed twice would be written twice into the same files; a format twice is surely a typo."""
        names = [getattr(item, "name", item) for item in items]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"{', '.join(repeated)} listed more than once; list each name once")
        return items

    @model_validator(mode="after")
    def _bounds_meet(self) -> ExportConfig:
        """`min_response_tokens` is at most `max_response_tokens`.

        Checked here, not at export: a run would otherwise generate, judge and score before finding out."""
        low, high = self.min_response_tokens, self.max_response_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"export.min_response_tokens={low} is above export.max_response_tokens={high}, so "
                             "no response could pass both; lower the min or raise the max")
        return self


class HeldOutConfig(ArithmeticConfig):
    num_problems: int = Field(50, ge=1, description="how many held-out problems")
    seed: int = Field(12345, description="generator seed, apart from the data's so the problems are held out")


class EvalConfig(_Strict):
    arithmetic: HeldOutConfig | None = Field(
        None, description="held-out embedded arithmetic problems (keep their seed apart from the data's); "
        "None: no evaluation")
    every: int = Field(0, ge=0, description="evaluate every N optimizer steps (0: only before and after training)")
    samples: int = Field(1, ge=1, description="k of pass@k; 1 with temperature 0 is greedy accuracy")
    temperature: float = Field(0.0, ge=0.0, description="sampling temperature of the evaluation (0: greedy)")
    max_new_tokens: int = Field(256, ge=1, description="length budget of an evaluation response")

    @model_validator(mode="after")
    def _every_needs_problems(self) -> EvalConfig:
        """`every` needs held-out problems (`arithmetic`) to evaluate on."""
        if self.every and self.arithmetic is None:
            raise ValueError(f"every={self.every} but there are no held-out problems to evaluate on; set "
                             "train.eval.arithmetic (e.g. {num_problems: 50}) or every: 0")
        return self


class TrainConfig(_Strict):
    data: str | None = Field(None, description="a run folder, Parquet file(s) (comma-separated or a glob) or a Hub dataset id")
    hub_config: str | None = Field(None, description="config (view) of a Hub dataset, e.g. trl")
    model: str | None = Field(None, description="Hub id, local folder or .gguf file; None: the shipped SmolLM2")
    advantage: Literal["sgpo", "grpo"] = Field("sgpo", description="train on `advantage` (SGPO) or `advantage_grpo`")
    temperature: float | None = Field(None, gt=0, description="sampling temperature of the data; None: from the run's manifest, else 1")
    epochs: int = Field(1, ge=1, description="passes over the data")
    batch_size: int = Field(4, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate schedule after warm-up")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradients clipped to this norm")
    clip_eps_low: float = Field(0.2, gt=0, lt=1, description="PPO clip: ratio kept in [1 - low, 1 + high]")
    clip_eps_high: float = Field(0.2, gt=0, description="upper PPO clip (above `clip_eps_low`: DAPO's clip-higher)")
    kl_coef: float = Field(0.0, ge=0, description="weight of the k3 KL to the initial policy; 0: no reference pass")
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "dr_grpo"] = Field(
        "token_mean", description="mean over every token of the batch (DAPO), mean of per-sequence means (GRPO), or a "
        "sum over tokens divided by sequences x longest response (Dr. GRPO)")
    max_length: int = Field(1024, ge=8, description="prompt + response tokens")
    overlong: Literal["skip", "truncate"] = Field("skip", description="what to do with a longer sequence (counted)")
    skip_zero_advantage: bool = Field(True, description="drop rows with zero advantage before any forward pass")
    lora: bool = Field(False, description="train a LoRA adapter through peft instead of every weight")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling")
    lora_target_modules: list[str] | str = Field("all-linear", description="modules LoRA adapts (peft's spelling)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when torch sees it (bf16 autocast), "
                                                   "else CPU (fp32)")
    packing: Literal["auto", "on", "off"] = Field(
        "auto", description="pack a micro-batch into one row without padding (position_ids restart per sequence); "
        "auto: with flash attention, whose varlen kernels make it pay (other attention builds a mask over the row)")
    logprob_chunk: int = Field(2048, ge=1, description="response positions whose fp32 logits exist at once")
    save_every: int = Field(0, ge=0, description="checkpoint every N optimizer steps (0: only at the end)")
    seed: int = Field(0, description="seed of the data order and of LoRA's initialisation")
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

    @model_validator(mode="after")
    def _parts(self) -> Recipe:
        """Every part's name is registered and its options are valid for it (a cascade's and a noisy judge's
        inner judges too; only a cascade's last judge may need an engine).

        Checked when the recipe loads, before any data or model loads and before an early stage is paid for."""
        from sgpo_data.judges.core import judging_for

        self.generate.backend.resolve("generate.backend")
        self.grader.resolve("grader")
        for i, view in enumerate(self.export.views):
            view.resolve(f"export.views[{i}]")
        judging_for(self)  # the judge, its backend and segmenter; no engine loads
        return self

    @model_validator(mode="after")
    def _tokens_need_a_tokenizer(self) -> Recipe:
        """`score.rts: tokens` with an `openai` policy backend needs `score.tokenizer`."""
        if self.score.rts == "tokens" and self.score.tokenizer is None and self.generate.backend.name == "openai":
            raise SgpoError("score.rts=tokens needs the policy's tokenizer: set score.tokenizer to its local folder or "
                            "Hub id (the name a server serves the policy under need not be one)")
        return self


# Keys an older recipe may still use: each is refused with one line naming its new place.
RENAMED = {
    "generate.backend_options": "generate.backend.options",
    "judge.backend_options": "judge.backend.options",
    "judge.segmenter_options": "judge.segmenter.options",
    "export.conversational": "the trl view's options: export.views: [..., {name: trl, options: {conversational: ...}}]",
    **{f"train.eval.{key}": f"train.eval.arithmetic.{key}" for key in ("num_problems", "seed", "min_steps", "max_steps")},
}
RENAMED_VALUES = {("score.scope", "all_wrong"): "wrong"}


def _refuse_renamed(tree: dict, where: str) -> None:
    for old, new in RENAMED.items():
        *parents, leaf = old.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            raise SgpoError(f"{where}: {old} has moved to {new}; rename the key")
    for (dotted, value), new in RENAMED_VALUES.items():
        section, key = dotted.split(".")
        if isinstance(tree.get(section), dict) and tree[section].get(key) == value:
            raise SgpoError(f"{where}: {dotted}: {value!r} is now called {new!r}; write {dotted}: {new}")


_PART_KEYS = {"backend", "segmenter", "grader", "judge"}
MAX_VALUES, MAX_DEPTH = 100_000, 64  # far beyond any real recipe; a YAML alias bomb or a runaway nesting is not one


def _set_dotted(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if isinstance(node.get(part), str) and part in _PART_KEYS:  # a part given by name alone: {name: ...}
            node[part] = {"name": node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SgpoError(f"--set {_short(dotted, 80)}: {_short(part, 80)} is not a section")
    if leaf in _PART_KEYS and isinstance(value, str) and isinstance(node.get(leaf), dict) \
            and node[leaf].get("name") == value:
        return  # the part it already is: its options stay (another name starts from that part's defaults)
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
    _refuse_renamed(tree, where)
    try:
        return Recipe.model_validate(tree)
    except SgpoError as exc:
        raise SgpoError(f"{where}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SgpoError(f"{where}: invalid recipe key {key!r}: {_message(err)} (got {_short(err.get('input'))})") \
            from None
