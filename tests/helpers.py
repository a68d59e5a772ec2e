"""Shared test settings."""


def tiny_overrides(num_problems: int = 3, num_samples: int = 2, max_new_tokens: int = 40) -> list[str]:
    """A real-model run small enough for the test suite: few prompts, short outputs, one prompt per shard."""
    return [
        f"data.arithmetic.num_problems={num_problems}",
        "data.arithmetic.max_steps=3",
        f"generate.sampling.num_samples={num_samples}",
        f"generate.sampling.max_new_tokens={max_new_tokens}",
        "generate.prompts_per_shard=1",
    ]
