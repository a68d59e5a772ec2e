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
