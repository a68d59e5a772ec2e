"""Engines, chosen by name: `get_backend("transformers", model=..., options={...})`. Each backend registers its
own options model (`generate.backend.options` / `judge.backend.options` in a recipe)."""

from sgpo_data.backends.base import Backend, Choice, Completion, Conversation, Feed, Generation, Request, SamplingParams
from sgpo_data.backends.openai_backend import OpenAIOptions
from sgpo_data.backends.transformers_backend import TransformersOptions
from sgpo_data.backends.vllm_backend import VLLMOptions
from sgpo_data.registry import Registry

BACKENDS: Registry[Backend] = Registry("backend")


@BACKENDS.register("transformers", options=TransformersOptions)
def _transformers(model: str | None, options: TransformersOptions) -> Backend:
    """A Hugging Face model in this process (batched `generate`), on CPU or one GPU."""
    from sgpo_data.backends.transformers_backend import TransformersBackend

    return TransformersBackend(model=model, device=options.device, dtype=options.dtype)


@BACKENDS.register("openai", options=OpenAIOptions)
def _openai(model: str | None, options: OpenAIOptions) -> Backend:
    """Any OpenAI-compatible server (a vLLM server, a hosted API), with many requests in flight."""
    from sgpo_data.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(model=model, options=options)


@BACKENDS.register("vllm", options=VLLMOptions)
def _vllm(model: str | None, options: VLLMOptions) -> Backend:
    """vLLM's offline engine in this process (`pip install 'sgpo-data[vllm]'`)."""
    from sgpo_data.backends.vllm_backend import VLLMBackend

    return VLLMBackend(model=model, options=options)


def get_backend(name: str, model: str | None = None, options: dict | None = None, key: str = "backend.options") -> Backend:
    """The engine `name` holding `model`, its options validated by the backend's own model."""
    return BACKENDS.get(name, model=model, options=BACKENDS.options(name, options, key))


__all__ = ["BACKENDS", "Backend", "Choice", "Completion", "Conversation", "Feed", "Generation", "Request", "SamplingParams",
           "get_backend"]
