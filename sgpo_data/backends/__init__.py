"""Engines, chosen by name: `get_backend("transformers", model=...)`."""

from sgpo_data.backends.base import Backend, Completion, Conversation, SamplingParams
from sgpo_data.registry import Registry

BACKENDS: Registry[Backend] = Registry("backend")


@BACKENDS.register("transformers")
def _transformers(**kwargs) -> Backend:
    from sgpo_data.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model=kwargs.get("model"), device=kwargs.get("device"), dtype=kwargs.get("dtype"))


@BACKENDS.register("openai")
def _openai(**kwargs) -> Backend:
    from sgpo_data.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(**kwargs)


def get_backend(name: str, **kwargs) -> Backend:
    return BACKENDS.get(name, **kwargs)


__all__ = ["BACKENDS", "Backend", "Completion", "Conversation", "SamplingParams", "get_backend"]
