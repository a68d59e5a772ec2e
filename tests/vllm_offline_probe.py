"""Run inside the vLLM environment by tests/test_vllm_backend.py: the offline backend's request-level behaviour,
printed as one JSON line (the test, in the main environment, checks it)."""

import json

if __name__ == "__main__":  # vLLM starts worker processes: the guard is required
    from sgpo_data.backends import Request, SamplingParams, get_backend
    from sgpo_data.outcomes import RequestError

    backend = get_backend("vllm", None, {"dtype": "bfloat16", "max_model_len": 512})
    capital = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
    choice = backend.choose([capital, capital], [["Banana", "Paris", "Seventeen"], ["Paris", "Banana"]])
    long = [{"role": "user", "content": "count: " + " ".join(str(i) for i in range(600))}]
    requests = [Request(capital, SamplingParams(n=3, temperature=1.0, max_new_tokens=16), seed=s) for s in range(6)]
    requests.insert(2, Request(long, SamplingParams(n=1, max_new_tokens=8)))
    results = backend.run(requests, max_in_flight=4)
    again = backend.run([Request(capital, SamplingParams(n=3, temperature=1.0, max_new_tokens=16), seed=0)])[0]
    too_long = results.pop(2)
    pattern = "response_0: (?:-1|0|1)\\nresponse_1: (?:-1|0)"
    shaped = backend.run([Request(capital, SamplingParams(n=1, temperature=1.0, max_new_tokens=24), pattern=pattern)])[0]
    prefix = [{"role": "user", "content": "Count from one to ten in words."},
              {"role": "assistant", "content": "one, two, three, four,"}]
    continued = backend.run([Request(prefix, SamplingParams(n=1, temperature=0.0, max_new_tokens=6))])[0]
    print("PROBE " + json.dumps({
        "choice": choice,
        "too_long": [too_long.kind, too_long.message] if isinstance(too_long, RequestError) else repr(too_long),
        "samples": [[c.to_dict() for c in r.completions] for r in results],
        "prompt_tokens": [r.prompt_tokens for r in results],
        "pattern": [pattern, shaped.completions[0].text],
        "continued": continued.completions[0].text,
        "same_seed_same_tokens": [c.token_ids for c in again.completions] == [c.token_ids for c in results[0].completions],
    }), flush=True)
    backend.close()
