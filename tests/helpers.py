"""Shared test settings."""


# The demo's judge is a cascade (arith, then the LLM); tests of the engines judge every wrong row with the LLM.
LLM_JUDGE = ["judge.name=llm", "judge.options={}"]


TIMING_COLUMNS = ("judge_seconds",)  # how long a verdict took: the one column two identical runs need not share


def without_timing(rows: list[dict]) -> list[dict]:
    """Rows to compare across runs: every column but the measured times."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def tiny_overrides(num_problems: int = 3, num_samples: int = 2, max_new_tokens: int = 40) -> list[str]:
    """A real-model run small enough for the test suite: few prompts, short outputs, one prompt per shard, every
    wrong response judged by the LLM."""
    return [*LLM_JUDGE,
        f"data.arithmetic.num_problems={num_problems}",
        "data.arithmetic.max_steps=3",
        f"generate.sampling.num_samples={num_samples}",
        f"generate.sampling.max_new_tokens={max_new_tokens}",
        "generate.prompts_per_shard=1",
    ]


def tiny_model(path):
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template: fast enough for trainer tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sgpo_data.backends.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def arithmetic_view(view: str, folder, num_problems: int = 4, min_steps: int = 2, max_steps: int = 3,
                    seed: int = 0) -> str:
    """A one-row-per-prompt view (`prompts`, `verl`) of embedded arithmetic problems with the demo's chat prompt,
    written as `sgpo-data export` writes it; returns the Parquet path. Two rollouts per problem, one right."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sgpo_data.config import load_recipe
    from sgpo_data.data import generate_arithmetic
    from sgpo_data.export import get_view
    from sgpo_data.prompts import conversation

    rows = [{**p, "sample_idx": s, "is_correct": s == 0}
            for p in generate_arithmetic(num_problems, min_steps, max_steps, seed) for s in range(2)]
    generate = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml").generate
    table = get_view(view).build(pa.Table.from_pylist(rows), [conversation(generate, r["problem"]) for r in rows])
    path = Path(folder) / f"{view}.parquet"
    pq.write_table(table, path)
    return str(path)
