"""A new part is one file: this module registers a toy backend, grader, judge and view, and a whole run and its
export use them by name from a recipe, with no other file of the package changed. It also holds the recipe
reference to the models it is generated from."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends import BACKENDS
from sgpo_data.backends.base import BatchBackend, Completion, Generation
from sgpo_data.config import load_recipe
from sgpo_data.errors import SgpoError
from sgpo_data.export.views import VIEWS, View, _col
from sgpo_data.graders import GRADERS
from sgpo_data.graders.base import GradeResult, Grader
from sgpo_data.judges import JUDGES
from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.schema import JudgeStatus
from sgpo_data.stages import run_all

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "recipe.md"


class EchoBackend(BatchBackend):
    """Answers every prompt with two steps; sample i of a group ends in the answer i."""

    def __init__(self, model, options):
        self.model_name = model or "echo"

    def generate_batch(self, requests):
        return [Generation([Completion(f"First, 1 + 1 = 2.\n\nThe answer is {i}.", "stop", 9, None)
                            for i in range(r.params.n)], prompt_tokens=5) for r in requests]


class LastDigitGrader(Grader):
    """Right when the response's last digit is the reference's."""

    def grade(self, responses, references):
        digits = [next((c for c in reversed(r) if c.isdigit()), None) for r in responses]
        return [GradeResult(d, d == str(ref)[-1], "ok") for d, ref in zip(digits, references)]


class ToyJudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(0, ge=0, description="the step every wrong response is said to go wrong at")


def _fixed(engine, options: ToyJudgeOptions, policy=None) -> Judge:
    """Says every wrong response goes wrong at `step` (the last step when it has fewer)."""

    class Fixed(Judge):
        model_name = "toy-fixed"

        def decide(self, item: JudgeInput) -> Verdict:
            step = min(options.step, len(item.steps) - 1)
            return Verdict(step, JudgeStatus.OK, str(step), judge=self.model_name)

    return Fixed()


class RewardOnlyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str = Field("sgpo_reward", description="the name of the reward column")


class RewardOnlyView(View):
    """prompt_id, sample_idx and the SGPO reward under a column name of the recipe's choice."""

    name = "toy-rewards"
    needs = ("prompt_id", "sample_idx", "reward")

    def __init__(self, column: str):
        self.column = column

    def _build(self, table, prompts):
        import pyarrow as pa

        return pa.table({"prompt_id": _col(table, "prompt_id"), "sample_idx": _col(table, "sample_idx"),
                         self.column: _col(table, "reward")})


TOYS = [(BACKENDS, "toy-echo", EchoBackend, None), (GRADERS, "toy-last-digit", LastDigitGrader, None),
        (JUDGES, "toy-fixed", _fixed, ToyJudgeOptions), (VIEWS, "toy-rewards", RewardOnlyView, RewardOnlyOptions)]


@pytest.fixture(autouse=True)
def toy_parts():
    """Each toy registered the way a part's own file registers itself, and forgotten after the test."""
    for parts, name, factory, options in TOYS:
        parts.register(name, options=options)(factory)
    yield
    for parts, name, _, _ in TOYS:
        parts.unregister(name)


TOY_RECIPE = ["generate.backend=toy-echo", "grader.name=toy-last-digit", "judge.name=toy-fixed",
              "judge.options={step: 1}", "data.arithmetic.num_problems=3", "generate.sampling.num_samples=4",
              "export.views=[flat, {name: toy-rewards, options: {column: r}}]", "export.card=false"]


def test_parts_registered_by_a_test_module_run_the_whole_pipeline_and_export(tmp_path):
    results = run_all(load_recipe(None, TOY_RECIPE), tmp_path)
    assert [r.stage for r in results] == ["generate", "judge", "score", "export"]
    assert all(r.complete and not r.errors for r in results)
    flat = pq.read_table(tmp_path / "export" / "flat" / "train-00000-of-00001.parquet").to_pylist()
    toy = pq.read_table(tmp_path / "export" / "toy-rewards" / "train-00000-of-00001.parquet").to_pylist()
    assert len(flat) == len(toy) == 12 and set(toy[0]) == {"prompt_id", "sample_idx", "r"}
    for row in flat:
        assert row["policy_model"] == "echo" and row["judge_model"] in (None, "toy-fixed")
        if row["is_correct"]:
            assert row["reward"] == 1.0 and row["first_error_step"] is None
        else:  # the toy judge's step 1 of 2: RTS 1/2, the sigmoid's midpoint
            assert row["first_error_step"] == 1 and row["rts"] == 0.5 and row["reward"] == pytest.approx(0.5)
    by_key = {(r["prompt_id"], r["sample_idx"]): r["reward"] for r in flat}
    assert {(r["prompt_id"], r["sample_idx"]): r["r"] for r in toy} == by_key


@pytest.mark.parametrize("override, message", [
    ("judge.options={step: -1}", "judge.options.step"),
    ("export.views=[{name: toy-rewards, options: {colour: r}}]", r"export.views\[0\].options.colour"),
    ("export.views=[toy-nothing]", "unknown export view 'toy-nothing'; valid names: .*toy-rewards"),
])
def test_a_toy_part_s_options_are_checked_when_the_recipe_loads(override, message):
    with pytest.raises(SgpoError, match=message):
        load_recipe(None, [*TOY_RECIPE, override])


def test_the_recipe_reference_is_generated_from_the_models_and_current():
    from sgpo_data.reference import recipe_reference

    text = recipe_reference()
    assert text == REFERENCE.read_text(encoding="utf-8"), \
        "docs/reference/recipe.md is out of date: run python -m sgpo_data.reference docs/reference/recipe.md"
    assert "toy" not in text  # parts registered outside the package stay off the page
    for section in ("data", "generate", "grader", "judge", "score", "export", "train", "ray"):
        assert f"## `{section}`" in text
    for kind, names in (("judge", JUDGES.names()), ("view", VIEWS.names()), ("backend", BACKENDS.names())):
        for name in names:
            assert name.startswith("toy") or f"#### {kind} `{name}`" in text


def test_a_run_made_before_parts_took_name_and_options_is_refused_with_one_line_until_overwrite(tmp_path):
    import json

    from sgpo_data.stages import run_stage

    recipe = load_recipe(None, TOY_RECIPE)
    run_stage("generate", recipe, tmp_path)
    manifest_path = tmp_path / "generate" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    generate = manifest["config"]["generate"]
    generate["backend_options"] = generate["backend"]["options"]  # how the config was recorded before
    generate["backend"] = generate["backend"]["name"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SgpoError, match="made with another config or input; pass --overwrite") as raised:
        run_stage("generate", recipe, tmp_path)
    assert "\n" not in str(raised.value)
    assert run_stage("generate", recipe, tmp_path, overwrite=True).complete
