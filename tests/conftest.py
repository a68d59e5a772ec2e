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


@pytest.fixture
def servers():
    """Two OpenAI-compatible fault servers on loopback, one for the policy and one for the judge."""
    from tests.fault_server import FaultServer

    with FaultServer() as policy, FaultServer() as judge:
        yield policy, judge


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


# The fast tier (`make test-fast`, `pytest -m "not slow"`) leaves out every test that loads the model, starts
# vLLM, or runs another process (the grader's math-verify worker, the CLI in a subprocess, Ray, torch training).
SLOW_FIXTURES = {"smollm2", "pipeline_run", "vllm_server", "exported", "demo"}
SLOW_MODULES = {"test_pipeline", "test_trainer", "test_openai_backend", "test_grader", "test_faults",
                "test_executors", "test_simulate"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
