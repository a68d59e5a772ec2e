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
        ("generate.backend=nope", "generate.backend: unknown backend 'nope'; valid names: openai, transformers"),
        ("grader.name=nope", "grader.name: unknown grader 'nope'"),
        ("judge.name=nope", "judge.name: unknown judge 'nope'"),
        ("judge.segmenter=nope", "judge.segmenter: unknown segmenter 'nope'"),
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
