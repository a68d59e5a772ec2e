"""What several test modules share: settings, tiny models and data, run folders built without a model, and a small
CLI run against two fault servers (tests/fault_server.py). Test doubles of the engine protocol are in tests/fakes.py.
Imports are made inside the functions, so that importing this module (conftest.py does) stays cheap."""

import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"


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
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sgpo_data.config import load_recipe
    from sgpo_data.data import generate_arithmetic
    from sgpo_data.export import get_view
    from sgpo_data.prompts import conversation

    rows = [{**p, "sample_idx": s, "is_correct": s == 0}
            for p in generate_arithmetic(num_problems, min_steps, max_steps, seed) for s in range(2)]
    generate = load_recipe(DEMO).generate
    table = get_view(view).build(pa.Table.from_pylist(rows), [conversation(generate, r["problem"]) for r in rows])
    path = Path(folder) / f"{view}.parquet"
    pq.write_table(table, path)
    return str(path)


# -- tables and run folders built without a model ----------------------------------------------------------------

def make_table(rows: list[tuple]):
    """A judged table to score. rows: (prompt_id, is_correct, num_steps, first_error_step, judge_status)."""
    import pyarrow as pa

    seen: dict[str, int] = {}
    sample_idx = []
    for r in rows:
        sample_idx.append(seen.get(r[0], 0))
        seen[r[0]] = sample_idx[-1] + 1
    return pa.table({
        "prompt_id": pa.array([r[0] for r in rows], pa.string()),
        "sample_idx": pa.array(sample_idx, pa.int32()),
        "is_correct": pa.array([r[1] for r in rows], pa.bool_()),
        "steps": pa.array([[f"step {i}" for i in range(r[2])] for r in rows], pa.list_(pa.string())),
        "first_error_step": pa.array([r[3] for r in rows], pa.int32()),
        "judge_status": pa.array([r[4] for r in rows], pa.string()),
    })


def col(table, name: str) -> list:
    return table[name].to_pylist()


def sig(x: float, beta: float = 5.0, gamma: float = 0.5) -> float:
    """The sigmoid reward map, by hand."""
    return 1.0 / (1.0 + math.exp(-beta * (x - gamma)))


ALL_NEGATIVE = [("p", False, 4, k, "ok") for k in (0, 1, 2, -1)]  # make_table rows: one group, every answer wrong


def judged_row(prompt_id: str, idx: int, k: int | None, judge_status: str = "ok", generate_ok: bool = True) -> dict:
    """A row of the judge stage's schema: four steps, first error `k`."""
    from sgpo_data.schema import JUDGE_SCHEMA

    row = {name: None for name in JUDGE_SCHEMA.names}
    row.update(prompt_id=prompt_id, problem=f"problem {prompt_id}", sample_idx=idx, is_correct=False if generate_ok else None,
               response="a\n\nb\n\nc\n\nd" if generate_ok else None, steps=["a\n\n", "b\n\n", "c\n\n", "d"] if generate_ok else [],
               first_error_step=k, judge_status=judge_status, generate_status="ok" if generate_ok else "error")
    if not generate_ok:
        row.update(generate_error_kind="bad_request", generate_error="400: too long")
    if judge_status == "error":
        row.update(judge_error_kind="timeout", judge_error="no answer within timeout_s=1")
    return row


def judged_run(root, rows: list[dict], cut: int):
    """A run folder whose judge stage is complete in two parts (rows[:cut], rows[cut:])."""
    import pyarrow as pa

    from sgpo_data.config import Recipe
    from sgpo_data.pipeline.folder import StageFolder
    from sgpo_data.schema import JUDGE_SCHEMA

    table = pa.Table.from_pylist(rows, schema=JUDGE_SCHEMA)
    recipe = Recipe().model_dump()
    configs = {"generate": {k: recipe[k] for k in ("data", "generate", "grader")}, "judge": {"judge": recipe["judge"]}}
    for stage, upstream in (("generate", None), ("judge", "generate")):
        folder = StageFolder(root, stage, upstream)
        folder.start(configs[stage], f"fp-{stage}", num_shards=2)
        for i, part in enumerate([table.slice(0, cut), table.slice(cut)]):
            folder.write_shard(i, part, f"in-{i}", {}, {"tally": {}})
        folder.finish({0: "in-0", 1: "in-1"}, lambda markers: {})
    return table


# (prompt, source, is_correct, number of steps, first_error_step, judge_status)
REPORT_ROWS = [
    ("p0", "alpha", True, 2, None, "skipped_correct"),
    ("p0", "alpha", False, 3, 1, "ok"),
    ("p0", "alpha", False, 2, -1, "ok"),
    ("p1", "alpha", False, 2, 0, "ok"),
    ("p1", "alpha", False, 3, None, "parse_error"),
    ("p1", "alpha", None, 2, None, "error"),
    ("p2", "beta", False, 4, 2, "ok"),
    ("p2", "beta", False, 4, 1, "ok"),
    ("p2", "beta", False, 4, 0, "ok"),
    ("p3", "beta", True, 2, None, "skipped_correct"),
    ("p3", "beta", True, 2, None, "skipped_correct"),
    ("p3", "beta", True, 3, None, "skipped_correct"),
]


def make_run(root: Path, generate_config: dict | None = None, finish_score: bool = True) -> Path:
    """A complete generate/judge/score run folder (REPORT_ROWS) with two data sources, every judge status and a -1."""
    import pyarrow as pa

    from sgpo_data.config import Recipe
    from sgpo_data.pipeline.folder import StageFolder
    from sgpo_data.scoring import score_stats, score_table

    recipe = Recipe().model_dump()
    generated = pa.table({
        "prompt_id": [r[0] for r in REPORT_ROWS],
        "problem": [f"problem {r[0]}" for r in REPORT_ROWS],
        "data_source": [r[1] for r in REPORT_ROWS],
        "sample_idx": pa.array([i % 3 for i in range(len(REPORT_ROWS))], pa.int32()),  # 3 rows per prompt
        "policy_model": ["tiny-policy"] * len(REPORT_ROWS),
        "is_correct": [r[2] for r in REPORT_ROWS],
    })
    judged = generated
    for name, values, type_ in [
        ("steps", [[f"step {i}\n\n" for i in range(r[3])] for r in REPORT_ROWS], pa.list_(pa.string())),
        ("first_error_step", [r[4] for r in REPORT_ROWS], pa.int32()),
        ("judge_status", [r[5] for r in REPORT_ROWS], pa.string()),
        ("judge_model", [None if r[5] == "skipped_correct" else "tiny-judge" for r in REPORT_ROWS], pa.string()),
    ]:
        judged = judged.append_column(name, pa.array(values, type_))
    scored = score_table(judged, Recipe().score)
    config = generate_config or {k: recipe[k] for k in ("data", "generate", "grader")}
    for stage, table, cfg in [("generate", generated, config), ("judge", judged, {"judge": recipe["judge"]}),
                              ("score", scored, {"score": recipe["score"]})]:
        out = StageFolder(root, stage, {"generate": None, "judge": "generate", "score": "judge"}[stage])
        out.start(cfg, f"fp-{stage}", num_shards=2 if stage != "score" else 1)
        if stage == "score" and not finish_score:
            break
        parts = [table] if stage == "score" else [table.slice(0, 6), table.slice(6)]
        for i, part in enumerate(parts):
            out.write_shard(i, part, f"in-{i}", {})
        stats = score_stats(table) if stage == "score" else {"responses": table.num_rows}
        out.finish({i: f"in-{i}" for i in range(len(parts))}, lambda markers: stats)
    return root


# -- a small CLI run against two fault servers (tests/fault_server.py), one for the policy, one for the judge ------

PROMPTS, G = 4, 4  # 2 shards of 2 prompts; one generate request per prompt
DELIVERED = {None, "fewer_choices"}  # faults after which the client still had a chat completion


def cli_args(out: Path, policy, judge, *extra: str, stages=("run",), model: str = "fake",
             timeout_s: float = 1.5) -> list[str]:
    """`sgpo-data` arguments for a small run (PROMPTS prompts, G samples, 2 shards) on the two servers."""
    args = [*stages, *([str(DEMO)] if stages == ("run",) else ["--recipe", str(DEMO)]), "--out", str(out),
            "--set", f"data.arithmetic.num_problems={PROMPTS}", "--set", f"generate.sampling.num_samples={G}",
            "--set", "generate.prompts_per_shard=2", "--set", f"generate.max_in_flight={G}",
            *[arg for s in LLM_JUDGE for arg in ("--set", s)], *extra]
    for section, server in (("generate", policy), ("judge", judge)):
        args += ["--set", f"{section}.backend=openai", "--set", f"{section}.model={model}", "--set",
                 f"{section}.backend.options={{base_url: '{server.base_url}', max_retries: 1, timeout_s: {timeout_s}}}"]
    return args


def run_cli(out: Path, policy, judge, *extra: str, **kwargs) -> tuple[int, str]:
    """The CLI (cli_args) in this process: its exit code and what it printed."""
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    result = CliRunner().invoke(app, cli_args(out, policy, judge, *extra, **kwargs), catch_exceptions=False)
    return result.exit_code, result.output


def first_problem() -> str:
    """The problem of the run's first prompt (every request about it contains it: a fault's `match`)."""
    from sgpo_data.data.arithmetic import generate_arithmetic

    return generate_arithmetic(PROMPTS, 2, 4, 0)[0]["problem"]


def delivered(server) -> set[str]:
    """The keys of the calls the server answered with a chat completion."""
    return {c.key for c in server.log if c.status == 200 and c.fault in DELIVERED}


def rows(out: Path, stage: str = "judge") -> list[dict]:
    from sgpo_data.run_reader import StageFiles

    return StageFiles(out, stage).dataset().to_table().to_pylist()


def assert_healthy_rerun_completes(out: Path, policy, judge, *extra: str, **kwargs) -> None:
    """Clear the faults, rerun: exit 0, every row ok, G rows per prompt, no successful call sent twice."""
    from sgpo_data.run_reader import StageFiles

    before = {name: (delivered(s), s.requests()) for name, s in (("policy", policy), ("judge", judge))}
    policy.faults.clear()
    judge.faults.clear()
    code, output = run_cli(out, policy, judge, *extra, **kwargs)
    assert code == 0, output
    table = StageFiles(out, "export").read().to_pylist()
    assert len(table) == PROMPTS * G
    assert len({(r["prompt_id"], r["sample_idx"]) for r in table}) == PROMPTS * G
    assert all(r["generate_status"] == "ok" and r["judge_status"] in ("ok", "skipped_correct") for r in table)
    assert all(r["reward"] is not None for r in table)
    for name, server in (("policy", policy), ("judge", judge)):
        succeeded, counts = before[name]
        after = server.requests()
        repeated = [key for key in succeeded if after[key] != counts[key]]
        assert not repeated, f"{name}: {len(repeated)} call(s) that had succeeded were sent again"
