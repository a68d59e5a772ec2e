"""Offline training data: rows of an exported run (flat or trl view) → tokenised examples → length-grouped
batches. The exact generated tokens are used when the data has them (`response_token_ids`), so the stored
behaviour log-probabilities line up with the tokens they belong to."""

from __future__ import annotations

import glob
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sgpo_data.errors import SgpoError


@dataclass
class Example:
    prompt_ids: list[int]
    response_ids: list[int]
    advantage: float
    old_logprobs: list[float] | None  # behaviour log-probs from the data; None → computed from the initial policy
    ref_logprobs: list[float] | None = None
    key: str = ""
    needs_logprobs: bool = field(init=False)  # the data lack behaviour log-probs: the trainer computes them

    def __post_init__(self):
        self.needs_logprobs = self.old_logprobs is None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class TrainData:
    examples: list[Example]
    counts: dict = field(default_factory=dict)
    temperature: float | None = None  # sampling temperature recorded in the run, when known
    generate_config: dict | None = None  # the run's generate config (prompt template), when known


def read_table(source: str, hub_config: str | None = None) -> tuple[pa.Table, dict | None]:
    """The rows and, for a run folder, its generate config (prompt template, sampling)."""
    path = Path(source)
    if path.is_dir():
        # the train split of the exported flat view: export filters applied, rows in error and the test split left out
        from sgpo_data.run_reader import export_view, generate_config

        return export_view(path, "flat", "train"), generate_config(path)
    files = sorted(f for pattern in source.split(",") for f in glob.glob(pattern.strip()))
    if files:
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive"), None
    if source.endswith(".parquet") or source.startswith((".", "/", "~")):
        raise SgpoError(f"training data {source} not found; pass a run folder, Parquet file(s) or a Hub dataset id")
    try:
        from datasets import load_dataset

        return load_dataset(source, hub_config, split="train").data.table, None
    except Exception as exc:  # the Hub is unreachable or the id is wrong
        raise SgpoError(f"could not load training data {source!r} from the Hub: {str(exc).splitlines()[0]}") from None


def _prompts(table: pa.Table, generate_config: dict | None) -> list[list[dict]]:
    if "prompt" in table.column_names:
        prompts = table["prompt"].to_pylist()
        return [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
    if generate_config is not None:
        from sgpo_data.prompts import conversation, recorded_recipe

        generate = recorded_recipe(generate_config).generate
        return [conversation(generate, problem) for problem in table["problem"].to_pylist()]
    return [[{"role": "user", "content": problem}] for problem in table["problem"].to_pylist()]


def _responses(table: pa.Table) -> list[str]:
    if "response" in table.column_names:
        return table["response"].to_pylist()
    return [c if isinstance(c, str) else c[-1]["content"] for c in table["completion"].to_pylist()]


ADVANTAGE_COLUMNS = {"sgpo": "advantage", "grpo": "advantage_grpo"}


def read_training_rows(source: str, advantage: str, hub_config: str | None = None) -> tuple[pa.Table, dict | None]:
    """The training rows and the run's generate config, checked for the columns training reads: done before any
    model loads, so a wrong --data fails at once."""
    table, generate_config = read_table(source, hub_config)
    column = ADVANTAGE_COLUMNS[advantage]
    has_prompt = "prompt" in table.column_names or "problem" in table.column_names
    has_response = "response" in table.column_names or "completion" in table.column_names
    if column not in table.column_names or not has_prompt or not has_response:
        raise SgpoError(f"training data {source} lacks {column!r}, a prompt or a response column; "
                        "export the `trl` or `flat` view (sgpo-data export --view trl)")
    return table, generate_config


def load_examples(source: str, tokenizer, advantage: str, max_length: int, overlong: str,
                  skip_zero_advantage: bool = True, hub_config: str | None = None,
                  rows: tuple[pa.Table, dict | None] | None = None) -> TrainData:
    """Tokenised examples of `source` (or of `rows`, as `read_training_rows` returned them)."""
    table, generate_config = rows or read_training_rows(source, advantage, hub_config)
    column = ADVANTAGE_COLUMNS[advantage]
    if not tokenizer.chat_template:
        raise SgpoError("the tokenizer has no chat template; train an instruct/chat model or pass one with a template")
    advantages = table[column].to_pylist()
    token_ids = table["response_token_ids"].to_pylist() if "response_token_ids" in table.column_names else None
    logprobs = table["response_logprobs"].to_pylist() if "response_logprobs" in table.column_names else None
    finish = table["finish_reason"].to_pylist() if "finish_reason" in table.column_names else [None] * table.num_rows
    keys = [f"{p}#{s}" for p, s in zip(table["prompt_id"].to_pylist(), table["sample_idx"].to_pylist())] \
        if {"prompt_id", "sample_idx"} <= set(table.column_names) else [str(i) for i in range(table.num_rows)]
    counts = {"rows": table.num_rows, "zero_advantage_skipped": 0, "overlong_skipped": 0, "overlong_truncated": 0,
              "logprobs_from_data": 0, "logprobs_from_initial_policy": 0, "end_of_turn_appended": 0}
    examples = []
    for i, (messages, response) in enumerate(zip(_prompts(table, generate_config), _responses(table))):
        adv = float(advantages[i] or 0.0)
        if skip_zero_advantage and adv == 0.0:
            counts["zero_advantage_skipped"] += 1
            continue
        prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
        exact = token_ids is not None and token_ids[i] is not None
        response_ids, closed = (list(token_ids[i]), False) if exact else retokenize(tokenizer, response, finish[i])
        counts["end_of_turn_appended"] += int(closed)
        old = logprobs[i] if exact and logprobs is not None and logprobs[i] is not None else None
        if old is not None and len(old) != len(response_ids):
            old = None
        example = Example(prompt_ids, response_ids, adv, old, key=keys[i])
        if example.length > max_length:
            if overlong == "skip" or len(prompt_ids) >= max_length:
                counts["overlong_skipped"] += 1
                continue
            keep = max_length - len(prompt_ids)
            example.response_ids = response_ids[:keep]
            example.old_logprobs = old[:keep] if old is not None else None
            counts["overlong_truncated"] += 1
        counts["logprobs_from_data" if example.old_logprobs is not None else "logprobs_from_initial_policy"] += 1
        examples.append(example)
    if not examples:
        raise SgpoError(f"training data {source}: no row left to train on ({counts['zero_advantage_skipped']} with zero "
                        f"{column}, {counts['overlong_skipped']} too long); all-zero advantages teach nothing")
    temperature = (generate_config or {}).get("generate", {}).get("sampling", {}).get("temperature")
    return TrainData(examples, counts, temperature, generate_config)


def retokenize(tokenizer, response: str | None, finish_reason: str | None) -> tuple[list[int], bool]:
    """The response's tokens when the data has no generated ids: the text re-tokenised, closed by the end-of-turn
    token only when the policy stopped by itself (finish_reason "stop"). A response cut at the token limit
    ("length") never produced one; without a finish_reason nothing is appended. Returns the ids and whether the
    end-of-turn token was appended."""
    ids = tokenizer(response or "", add_special_tokens=False).input_ids
    close = finish_reason == "stop" and tokenizer.eos_token_id is not None
    return (ids + [tokenizer.eos_token_id] if close else ids), close


def length_grouped_batches(examples: list[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Indices in batches of similar length (little padding), in a seeded random order of batches.

    Examples are shuffled, cut into mega-chunks of 16 batches, sorted by length inside each chunk, then
    batched; the batch order is shuffled again. Same seed → same batches."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    chunk = batch_size * 16
    batches = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: examples[i].length)
        batches += [block[j : j + batch_size] for j in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches
