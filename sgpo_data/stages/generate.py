"""generate: G sampled responses per prompt, graded against the reference answer.

Shards are fixed runs of `prompts_per_shard` prompts. One request per prompt (n = G) streams through the engine
with up to `max_in_flight` sequences outstanding across prompts and shards, and a shard is written as soon as
its last prompt is answered. Each prompt's seed comes from the recipe seed and its prompt id, and each request
is cached on its own (model, messages, sampling, seed), so a rerun pays only for what did not come back.

Every prompt yields exactly G rows. A request that fails marks its prompt's rows (`generate_status` error, the
kind and text kept, `response` null); a server that returns fewer choices than asked is asked again for the
missing samples (`max_refills` times, each with a seed of its own), and a shortfall that persists is a row error.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from sgpo_data.backends import Completion, Request, SamplingParams, get_backend
from sgpo_data.config import identity
from sgpo_data.data import load_prompts
from sgpo_data.errors import SgpoError
from sgpo_data.graders import get_grader
from sgpo_data.graders.base import GradeResult
from sgpo_data.outcomes import ErrorKind, RequestError
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.folder import fingerprint_table
from sgpo_data.pipeline.stage import Shard, ShardOutput
from sgpo_data.pipeline.stream import ShardJob, StreamingStage
from sgpo_data.prompts import conversation
from sgpo_data.schema import GENERATE_FIELDS, GENERATE_SCHEMA, GenerateStatus, GradeStatus, PROMPT_SCHEMA


def prompt_seed(seed: int, prompt_id: str, drawn: int = 0) -> int:
    """The seed of a prompt's request; `drawn` > 0 for a refill after a server returned only `drawn` samples."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}:{drawn}".encode()).digest()[:4], "little")


class GenerateStage(StreamingStage):
    """Sample G responses per prompt and grade them."""

    name = "generate"
    upstream = None
    needs = tuple(PROMPT_SCHEMA.names)
    adds = tuple(GENERATE_FIELDS)
    status_column = "generate_status"

    def backend_identity(self) -> dict:
        """The backend's options that decide the rows (not its timeouts or concurrency)."""
        return identity(self.recipe.generate.backend.resolve("generate.backend"))

    def config(self) -> dict:
        generate = identity(self.recipe.generate)  # what decides the rows: not max_in_flight or max_refills
        generate["backend"]["options"] = self.backend_identity()
        return {"data": self.recipe.data.model_dump(), "generate": generate, "grader": self.recipe.grader.model_dump()}

    def plan(self, upstream) -> tuple[list[Shard], str]:
        prompts = load_prompts(self.recipe.data)
        if self.recipe.score.no_reference == "refuse":
            _refuse_missing_references(prompts, self.recipe.data.source)
        per_shard, G = self.recipe.generate.prompts_per_shard, self.recipe.generate.sampling.num_samples
        shards = []
        for i in range(-(-prompts.num_rows // per_shard)):
            part = prompts.slice(i * per_shard, per_shard)
            shards.append(Shard(i, fingerprint_table(part), part.num_rows * G, table=part))
        return shards, fingerprint_table(prompts)

    def open(self, run) -> None:
        super().open(run)
        self._backend = None
        self.max_in_flight = self.recipe.generate.max_in_flight
        self.grader = get_grader(self.recipe.grader.name, self.recipe.grader.options)
        # Grading runs on a thread of its own (math-verify's work is in a worker process), so the request window
        # is refilled while prompts are graded; the worker starts while the first requests are out.
        self.grading = ThreadPoolExecutor(1, thread_name_prefix="grader")
        self.grading.submit(self.grader.warm)

    def engine(self):
        """Loaded at the first request the cache cannot answer: a rerun of cached work loads no model."""
        if self._backend is None:
            gen = self.recipe.generate
            self._backend = get_backend(gen.backend.name, gen.model, gen.backend.options, "generate.backend.options")
        return self._backend

    def close(self) -> None:
        self.grading.shutdown(cancel_futures=True)
        self.grader.close()
        if self._backend is not None:
            self._backend.close()

    def job(self, shard: Shard) -> "_GenerateJob":
        from sgpo_data.run_reader import StageFiles

        return _GenerateJob(self, shard, CallCache(StageFiles(self.run, self.name).cache_path(shard.index)))


class _GenerateJob(ShardJob):
    """One shard's prompts: cached samples first, then one request per prompt for the missing ones, and refills
    (each with a seed of its own) for samples a server left out."""

    def __init__(self, stage: GenerateStage, shard: Shard, cache: CallCache):
        super().__init__(shard)
        self.stage, self.cache, self.gen = stage, cache, stage.recipe.generate
        self.G = self.gen.sampling.num_samples
        self.prompts = shard.load().to_pylist()
        self.conversations = [conversation(self.gen, row["problem"]) for row in self.prompts]
        options = stage.backend_identity()
        self.keys = [request_key(backend=self.gen.backend.name, model=self.gen.model, options=options,
                                 messages=c, sampling=self.gen.sampling.model_dump(exclude={"num_samples"}),
                                 seed=prompt_seed(self.gen.sampling.seed, row["prompt_id"]))
                     for c, row in zip(self.conversations, self.prompts)]
        self.entries = [_entry(cache.get(key)) for key in self.keys]
        self.errors: dict[int, RequestError] = {}
        self.refills = [0] * len(self.prompts)
        self.grades: dict[int, Future] = {}  # prompt -> its samples' GradeResults, graded as soon as they are in

    def _request(self, i: int) -> Request:
        have, s = len(self.entries[i]["samples"]), self.gen.sampling
        params = SamplingParams(n=self.G - have, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)
        return Request(self.conversations[i], params, prompt_seed(s.seed, self.prompts[i]["prompt_id"], have), tag=i)

    def requests(self) -> list[Request]:
        for i, entry in enumerate(self.entries):
            if len(entry["samples"]) >= self.G:
                self._grade(i)
        return [self._request(i) for i, e in enumerate(self.entries) if len(e["samples"]) < self.G]

    def _grade(self, i: int) -> None:
        responses = [c["text"] for c in self.entries[i]["samples"][: self.G]]
        reference = self.prompts[i]["reference_answer"]
        self.grades[i] = self.stage.grading.submit(self.stage.grader.grade, responses, [reference] * len(responses))

    def take(self, request: Request, result) -> list[Request]:
        i, entry = request.tag, self.entries[request.tag]
        if isinstance(result, RequestError):
            self.errors[i] = result
            self._grade(i)  # the samples that did come back, if any
            return []
        if result.completions:
            entry["samples"] += [c.to_dict() for c in result.completions[: request.params.n]]
            entry["model"] = self.stage.engine().model_name
            entry["prompt_tokens"] = result.prompt_tokens
            entry["requests"] += 1
            self.cache.put(self.keys[i], entry)
        if len(entry["samples"]) < self.G and self.refills[i] < self.gen.max_refills:
            self.refills[i] += 1
            return [self._request(i)]
        self._grade(i)
        return []

    def ready(self) -> bool:
        return all(future.done() for future in self.grades.values())

    def finish(self) -> ShardOutput:
        rows = []
        for i, row in enumerate(self.prompts):
            entry = self.entries[i]
            samples = entry["samples"]
            grades = self.grades[i].result()
            for idx in range(self.G):
                if idx < len(samples):
                    rows.append(_row(row, idx, entry, Completion(**samples[idx]), grade=grades[idx]))
                else:
                    error = self.errors.get(i) or RequestError(
                        ErrorKind.INVALID_RESPONSE, f"the server returned {len(samples)} of {self.G} samples after "
                        f"{self.gen.max_refills} refill request(s)")
                    rows.append(_row(row, idx, {**entry, "model": entry["model"] or self.gen.model}, None, error))
        usage = {"requests": sum(e["requests"] for e in self.entries),
                 "prompt_tokens": sum(e["requests"] * (e["prompt_tokens"] or 0) for e in self.entries),
                 "completion_tokens": sum(c["num_tokens"] for e in self.entries for c in e["samples"][: self.G])}
        table = pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA)
        return ShardOutput(table, {"usage": usage})

    def close(self) -> None:
        self.cache.close()


def _refuse_missing_references(prompts: pa.Table, source: str) -> None:
    """Before any model loads: prompts without a reference answer would give rows with no outcome to reward."""
    import pyarrow.compute as pc

    answers = prompts["reference_answer"]
    missing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(answers), ""), True)
    if count := pc.sum(missing).as_py():
        first = prompts["prompt_id"][pc.index(missing, True).as_py()].as_py()
        raise SgpoError(f"data {source}: {count} of {prompts.num_rows} prompt(s) have no reference answer (e.g. "
                        f"prompt_id={first!r}), so their responses have no outcome to reward; map the answer column "
                        "(data.columns.reference_answer or data.preset) or set score.no_reference=exclude to leave "
                        "them out of rewards and views")


def _entry(cached: dict | None) -> dict:
    """A prompt's cache entry: the samples so far, the model that made them, the prompt's length in tokens and the
    requests they took (entries written before usage was recorded have neither)."""
    entry = {"model": None, "samples": [], "prompt_tokens": None, "requests": 0}
    if cached:
        entry.update(cached)
        entry["requests"] = entry["requests"] or 1
    return entry


def _row(prompt: dict, idx: int, entry: dict, completion: Completion | None, error: RequestError | None = None,
         grade: GradeResult | None = None) -> dict:
    ok = completion is not None
    return {
        **prompt,
        "sample_idx": idx,
        "response": completion.text if ok else None,
        "finish_reason": completion.finish_reason if ok else None,
        "policy_model": entry["model"],
        "prompt_tokens": entry["prompt_tokens"] if ok else None,
        "response_tokens": completion.num_tokens if ok else None,
        "response_logprobs": completion.logprobs if ok else None,
        "response_token_ids": completion.token_ids if ok else None,
        "generate_status": GenerateStatus.OK if ok else GenerateStatus.ERROR,
        "generate_error_kind": None if ok else error.kind,
        "generate_error": None if ok else error.message,
        "pred_answer": grade.pred_answer if ok else None,
        "is_correct": grade.is_correct if ok else None,
        "grade_status": grade.status if ok else GradeStatus.NO_RESPONSE,
    }
