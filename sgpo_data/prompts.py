"""The chat messages a policy sees for a problem, from the generate config. Generation, export and training all
build prompts here, so a run's rows can always be turned back into the exact conversations that produced them."""

from __future__ import annotations

from sgpo_data.config import GenerateConfig, Recipe


def conversation(generate: GenerateConfig, problem: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": generate.system_prompt}] if generate.system_prompt else []
    return messages + [{"role": "user", "content": generate.prompt_template.replace("{problem}", problem)}]


def recorded_recipe(config: dict | None) -> Recipe:
    """The recipe sections a generate stage recorded in its manifest config (defaults where absent)."""
    return Recipe.model_validate({k: v for k, v in (config or {}).items() if k in ("data", "generate", "grader")})
