from __future__ import annotations

from pathlib import Path

import pytest

from sgpo_data.config import load_recipe
from tests.helpers import tiny_overrides

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def tiny_recipe():
    return load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml", tiny_overrides())


@pytest.fixture(scope="session")
def smollm2():
    """The real shipped model, loaded once for the session."""
    from sgpo_data.backends import get_backend

    return get_backend("transformers")


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One real-model run through every stage: 4 prompts x 4 samples, short outputs."""
    from sgpo_data.stages import run_all

    out = tmp_path_factory.mktemp("run")
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml",
                         tiny_overrides(num_problems=4, num_samples=4, max_new_tokens=64))
    run_all(recipe, out)
    return out
