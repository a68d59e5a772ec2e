"""Engines, chosen by name: `get_backend("transformers", model=..., options={...})`. Each backend is one file of
this package that registers itself with its options model (`generate.backend.options` / `judge.backend.options`
in a recipe): `@BACKENDS.register("name", options=Options)` on a factory `(model, options) -> Backend`."""

from sgpo_data.backends.base import (BACKENDS, Backend, Choice, Completion, Conversation, Feed, Generation, Request,
                                     SamplingParams)


def get_backend(name: str, model: str | None = None, options: dict | None = None, key: str = "backend.options") -> Backend:
    """The engine `name` holding `model`, its options validated by the backend's own model."""
    return BACKENDS.get(name, model=model, options=BACKENDS.options(name, options, key))


__all__ = ["BACKENDS", "Backend", "Choice", "Completion", "Conversation", "Feed", "Generation", "Request", "SamplingParams",
           "get_backend"]
