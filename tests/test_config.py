from pathlib import Path

import pytest

from sgpo_data.config import Recipe, load_recipe
from sgpo_data.errors import SgpoError
from sgpo_data.stages import check_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_demo_recipe_validates_and_overrides_apply():
    recipe = load_recipe(RECIPES / "demo.yaml", ["generate.sampling.num_samples=8", "score.beta=3.5"])
    assert recipe.generate.sampling.num_samples == 8
    assert recipe.score.beta == 3.5
    assert recipe.data.source == "arithmetic"
    check_recipe(recipe)


def test_defaults_without_a_recipe():
    assert load_recipe(None) == Recipe()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["score.betta=3"], "invalid recipe key 'score.betta': Extra inputs are not permitted"),
        (["score.beta=-1"], "invalid recipe key 'score.beta': Input should be greater than 0"),
        (["score.gamma=1.5"], "invalid recipe key 'score.gamma'"),
        (["generate.sampling.num_samples=0"], "generate.sampling.num_samples"),
        (["nonsense"], "expected dotted.key=value"),
        (["score.beta.x=1"], "'beta' is not a section"),
    ],
)
def test_bad_keys_and_values_name_the_key(overrides, message):
    with pytest.raises(SgpoError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_recipe(RECIPES / "demo.yaml", overrides)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(SgpoError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(SgpoError, match="is not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SgpoError, match="must be a mapping"):
        load_recipe(bad)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generate.backend=nope", "generate.backend.name: unknown backend 'nope'; valid names: openai, transformers"),
        ("grader.name=nope", "grader.name: unknown grader 'nope'"),
        ("judge.name=nope", "judge.name: unknown judge 'nope'"),
        ("judge.segmenter=nope", "judge.segmenter.name: unknown segmenter 'nope'"),
    ],
)
def test_unknown_part_names_fail_before_anything_loads(override, message):
    with pytest.raises(SgpoError, match=message):
        check_recipe(load_recipe(None, [override]))


def test_every_shipped_recipe_validates():
    for path in sorted(RECIPES.glob("*.yaml")):
        if path.name.startswith("accelerate_"):
            continue  # an accelerate config, not a recipe
        check_recipe(load_recipe(path))


@pytest.mark.parametrize("yaml_text, message", [
    ("generate:\n  backend: openai\n  backend_options: {base_url: 'http://h/v1'}\n",
     "generate.backend_options has moved to generate.backend.options"),
    ("judge:\n  backend_options: {}\n", "judge.backend_options has moved to judge.backend.options"),
    ("judge:\n  segmenter_options: {min_chars: 3}\n", "judge.segmenter_options has moved to judge.segmenter.options"),
    ("export:\n  conversational: false\n", "export.conversational has moved to the trl view's options"),
    ("train:\n  eval: {num_problems: 8}\n", "train.eval.num_problems has moved to train.eval.arithmetic.num_problems"),
    ("score:\n  scope: all_wrong\n", "score.scope: 'all_wrong' is now called 'wrong'"),
])
def test_a_key_of_an_older_recipe_is_one_line_naming_its_new_place(tmp_path, yaml_text, message):
    path = tmp_path / "old.yaml"
    path.write_text(yaml_text)
    with pytest.raises(SgpoError, match=message) as raised:
        load_recipe(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)


def test_a_part_is_a_name_or_name_and_options_and_set_keeps_options_of_the_same_part():
    recipe = load_recipe(RECIPES / "math500_vllm.yaml", ["judge.backend=openai", "generate.backend.options.max_retries=9"])
    assert recipe.judge.backend.options["api_key_env"] == "JUDGE_API_KEY"  # the same part: its options stay
    assert recipe.generate.backend.options == {"base_url": "http://127.0.0.1:8000/v1", "timeout_s": 600, "max_retries": 9}
    recipe = load_recipe(RECIPES / "math500_vllm.yaml", ["generate.backend=transformers"])
    assert recipe.generate.backend.name == "transformers" and recipe.generate.backend.options == {}
    assert load_recipe(None, ["judge.segmenter=lines"]).judge.segmenter.name == "lines"


@pytest.mark.parametrize("override, message", [
    ("data.arithmetic.min_steps=5", "'data.arithmetic': min_steps=5 is above max_steps=4"),
    ("train.eval.arithmetic={min_steps: 6, max_steps: 3}", "min_steps=6 is above max_steps=3"),
    ("export.min_response_tokens=50", None),
    ("judge.options={judges: [llm, arith]}", "needs an engine, so it can only be the last judge"),
    ("judge.name=noisy", None),
    ("judge.options={judge: nope}", None),
    ("data.preset=math501", "unknown preset 'math501'; valid: gsm8k, math500, processbench"),
    ("train.eval.every=5", "every=5 but there are no held-out problems"),
])
def test_cross_field_rules_are_checked_when_the_recipe_loads(override, message):
    """Rules that tie keys together fail at load, before any stage, with the key named."""
    if message is None:  # valid alone: the rule needs its partner
        if override.startswith("export."):
            with pytest.raises(SgpoError, match="min_response_tokens=50 is above export.max_response_tokens=10"):
                load_recipe(None, [override, "export.max_response_tokens=10"])
        elif override == "judge.name=noisy":
            with pytest.raises(SgpoError, match="a noisy judge cannot wrap another noisy judge"):
                load_recipe(None, [override, "judge.options={judge: noisy}"])
        else:
            with pytest.raises(SgpoError, match="judge.options.judge: unknown judge 'nope'"):
                load_recipe(None, ["judge.name=noisy", override])
        return
    with pytest.raises(SgpoError, match=message):
        load_recipe(RECIPES / "demo.yaml", [override])
