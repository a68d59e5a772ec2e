"""Evaluation of the policy being trained: held-out embedded arithmetic problems, graded like the data."""

from __future__ import annotations

from sgpo_data.config import EvalConfig


def evaluate(trainer, cfg: EvalConfig) -> dict:
    """Accuracy (mean over all samples) and pass@k (share of problems with a correct sample)."""
    from sgpo_data.backends import SamplingParams
    from sgpo_data.backends.transformers_backend import TransformersBackend
    from sgpo_data.data import generate_arithmetic
    from sgpo_data.graders import get_grader
    from sgpo_data.prompts import conversation, recorded_recipe

    accelerator = trainer.accelerator
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return {}
    generate = recorded_recipe(trainer.data.generate_config).generate
    held_out = cfg.arithmetic
    problems = generate_arithmetic(held_out.num_problems, held_out.min_steps, held_out.max_steps, held_out.seed)
    model = accelerator.unwrap_model(trainer.model)
    model.eval()
    backend = TransformersBackend.from_loaded(model, trainer.tokenizer, trainer.model_name, str(accelerator.device))
    params = SamplingParams(n=cfg.samples, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                            seed=held_out.seed)
    responses: list[str] = []
    per_call = max(1, generate.batch_size // cfg.samples)
    for start in range(0, len(problems), per_call):
        batch = problems[start : start + per_call]
        groups = backend.generate([conversation(generate, p["problem"]) for p in batch], params)
        responses += [c.text for group in groups for c in group]
    references = [p["reference_answer"] for p in problems for _ in range(cfg.samples)]
    with get_grader("math_verify") as grader:
        correct = [r.is_correct is True for r in grader.grade(responses, references)]
    model.train()
    accelerator.wait_for_everyone()
    per_problem = [any(correct[i * cfg.samples : (i + 1) * cfg.samples]) for i in range(len(problems))]
    return {"accuracy": sum(correct) / len(correct), f"pass@{cfg.samples}": sum(per_problem) / len(problems),
            "problems": len(problems), "samples": cfg.samples}
