"""generate: G sampled responses per prompt, graded against the reference answer.

Shards are fixed runs of `prompts_per_shard` prompts; inside a shard, engine calls are fixed batches of
`max_in_flight / G` prompts. Each prompt's seed comes from the recipe seed and its prompt id, and each request is
cached on its own (model, messages, sampling, seed), so a rerun pays only for what did not come back.

Every prompt yields exactly G rows. A request that fails marks its prompt's rows (`generate_status` error, the
kind and text kept, `response` null); a server that returns fewer choices than asked is asked again for the
missing samples (`max_refills` times, each with a seed of its own), and a shortfall that persists is a row error.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from sgpo_data.backends import BACKENDS, Completion, SamplingParams, get_backend
from sgpo_data.config import identity
from sgpo_data.data import load_prompts
from sgpo_data.errors import ServiceError
from sgpo_data.graders import GRADERS, get_grader
from sgpo_data.outcomes import ErrorKind, RequestError
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.folder import fingerprint_table
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, Stage
from sgpo_data.prompts import conversation
from sgpo_data.schema import GENERATE_FIELDS, GENERATE_SCHEMA, GenerateStatus, GradeStatus, PROMPT_SCHEMA


def prompt_seed(seed: int, prompt_id: str, drawn: int = 0) -> int:
    """The seed of a prompt's request; `drawn` > 0 for a refill after a server returned only `drawn` samples."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}:{drawn}".encode()).digest()[:4], "little")


@STAGES.register("generate")
class GenerateStage(Stage):
    name = "generate"
    upstream = None
    needs = tuple(PROMPT_SCHEMA.names)
    adds = tuple(GENERATE_FIELDS)
    status_column, error_kind_column = "generate_status", "generate_error_kind"

    def check(self) -> None:
        cfg = self.recipe
        BACKENDS.check(cfg.generate.backend, "generate.backend")
        self.backend_options = BACKENDS.options(cfg.generate.backend, cfg.generate.backend_options, "generate.backend_options")
        GRADERS.check(cfg.grader.name, "grader.name")
        GRADERS.options(cfg.grader.name, cfg.grader.options, "grader.options")

    def config(self) -> dict:
        generate = identity(self.recipe.generate)  # what decides the rows: not max_in_flight or max_refills
        generate["backend_options"] = identity(self.backend_options)
        return {"data": self.recipe.data.model_dump(), "generate": generate, "grader": self.recipe.grader.model_dump()}

    def plan(self, upstream) -> tuple[list[Shard], str]:
        prompts = load_prompts(self.recipe.data)
        per_shard, G = self.recipe.generate.prompts_per_shard, self.recipe.generate.sampling.num_samples
        shards = []
        for i in range(-(-prompts.num_rows // per_shard)):
            part = prompts.slice(i * per_shard, per_shard)
            shards.append(Shard(i, fingerprint_table(part), part.num_rows * G, table=part))
        return shards, fingerprint_table(prompts)

    def open(self, run) -> None:
        super().open(run)  # check() has run: the runner calls it first
        self._backend = None
        self.grader = get_grader(self.recipe.grader.name, self.recipe.grader.options)

    @property
    def backend(self):
        """Loaded at the first request the cache cannot answer: a rerun of cached work loads no model."""
        if self._backend is None:
            gen = self.recipe.generate
            self._backend = get_backend(gen.backend, gen.model, gen.backend_options, "generate.backend_options")
        return self._backend

    def close(self) -> None:
        self.grader.close()
        if self._backend is not None:
            self._backend.close()

    def process(self, shard: Shard) -> ShardOutput:
        from sgpo_data.run_reader import StageFiles

        prompts = shard.load().to_pylist()
        gen = self.recipe.generate
        per_call = max(1, gen.max_in_flight // gen.sampling.num_samples)
        rows: list[dict] = []
        with CallCache(StageFiles(self.run, self.name).cache_path(shard.index)) as cache:
            for start in range(0, len(prompts), per_call):
                batch = prompts[start : start + per_call]
                rows += self._generate(batch, cache)
                self.advance(len(batch) * gen.sampling.num_samples)
        return ShardOutput(self._grade(pa.Table.from_pylist(rows)))

    def _generate(self, batch: list[dict], cache: CallCache) -> list[dict]:
        """G rows per prompt of `batch`: cached samples first, then requests for the missing ones."""
        gen = self.recipe.generate
        G = gen.sampling.num_samples
        conversations = [conversation(gen, row["problem"]) for row in batch]
        keys = [request_key(backend=gen.backend, model=gen.model, options=identity(self.backend_options),
                            messages=c, sampling=gen.sampling.model_dump(exclude={"num_samples"}),
                            seed=prompt_seed(gen.sampling.seed, row["prompt_id"]))
                for c, row in zip(conversations, batch)]
        entries = [cache.get(key) or {"model": None, "samples": []} for key in keys]
        errors: dict[int, RequestError] = {}
        for _ in range(1 + gen.max_refills):
            todo = [i for i, e in enumerate(entries) if len(e["samples"]) < G and i not in errors]
            fatal = None
            for n in sorted({G - len(entries[i]["samples"]) for i in todo}):  # one engine call per sample count
                idx = [i for i in todo if G - len(entries[i]["samples"]) == n]
                seeds = [prompt_seed(gen.sampling.seed, batch[i]["prompt_id"], len(entries[i]["samples"])) for i in idx]
                params = SamplingParams(n=n, temperature=gen.sampling.temperature, top_p=gen.sampling.top_p,
                                        max_new_tokens=gen.sampling.max_new_tokens, seed=seeds[0])
                results = self.backend.generate([conversations[i] for i in idx], params, seeds)
                done = {}
                for i, result in zip(idx, results):
                    if isinstance(result, ServiceError):
                        fatal = fatal or result
                    elif isinstance(result, RequestError):
                        errors[i] = result
                    elif result:
                        entries[i]["samples"] += [c.to_dict() for c in result[:n]]
                        entries[i]["model"] = self.backend.model_name
                        done[keys[i]] = entries[i]
                cache.put_many(done)  # what came back is kept before a service failure stops the stage
            if fatal:
                raise fatal
        rows = []
        for i, row in enumerate(batch):
            samples = entries[i]["samples"]
            for idx in range(G):
                if idx < len(samples):
                    rows.append(_row(row, idx, entries[i]["model"], Completion(**samples[idx])))
                else:
                    error = errors.get(i) or RequestError(
                        ErrorKind.INVALID_RESPONSE, f"the server returned {len(samples)} of {G} samples after "
                        f"{gen.max_refills} refill request(s)")
                    rows.append(_row(row, idx, entries[i]["model"] or gen.model, None, error))
        return rows

    def _grade(self, table: pa.Table) -> pa.Table:
        responses = table["response"].to_pylist()
        answered = [i for i, r in enumerate(responses) if r is not None]
        results = dict(zip(answered, self.grader.grade([responses[i] for i in answered],
                                                       [table["reference_answer"][i].as_py() for i in answered])))
        columns = {
            "pred_answer": [results[i].pred_answer if i in results else None for i in range(table.num_rows)],
            "is_correct": [results[i].is_correct if i in results else None for i in range(table.num_rows)],
            "grade_status": [results[i].status if i in results else GradeStatus.NO_RESPONSE for i in range(table.num_rows)],
        }
        for name, values in columns.items():
            table = table.append_column(name, pa.array(values, GENERATE_SCHEMA.field(name).type))
        return table.select(GENERATE_SCHEMA.names).cast(GENERATE_SCHEMA)


def _row(prompt: dict, idx: int, model: str | None, completion: Completion | None, error: RequestError | None = None) -> dict:
    ok = completion is not None
    return {
        **prompt,
        "sample_idx": idx,
        "response": completion.text if ok else None,
        "finish_reason": completion.finish_reason if ok else None,
        "policy_model": model,
        "response_tokens": completion.num_tokens if ok else None,
        "response_logprobs": completion.logprobs if ok else None,
        "response_token_ids": completion.token_ids if ok else None,
        "generate_status": GenerateStatus.OK if ok else GenerateStatus.ERROR,
        "generate_error_kind": None if ok else error.kind,
        "generate_error": None if ok else error.message,
    }
