"""The transformers backend against a bare `model.generate` of the same batch: tokens/s and their ratio.

    python benchmarks/transformers_generate.py [--prompts 8] [--samples 4] [--max-new-tokens 64]
        [--random 321m] [--device cuda] [--json out.json]

The backend's `generate_batch` samples the prompts' G completions in one `generate` and records each sampled
token's behaviour log-prob; the bare call is `model.generate` with the same inputs and sampling parameters and
nothing recorded. The model is the shipped SmolLM2-135M, or with `--random` a randomly initialised Llama of the
named size with its tokenizer (nothing downloaded). Both run with `min_new_tokens = max_new_tokens`, so they
produce the same number of tokens. One warm-up of each, then the median of `--repeat` runs. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from sgpo_data.backends.base import Request, SamplingParams
from sgpo_data.backends.models import resolve_model
from sgpo_data.backends.transformers_backend import TransformersBackend

SIZES = {  # hidden, layers, intermediate, heads, kv heads: Llamas with SmolLM2's vocabulary (49,152 tokens)
    "135m": (576, 30, 1536, 9, 3),
    "321m": (960, 28, 2560, 15, 5),
}


def load(random_size: str | None, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = resolve_model(None)[0]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if random_size is None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        hidden, layers, intermediate, heads, kv = SIZES[random_size]
        base = LlamaConfig.from_pretrained(path)
        config = LlamaConfig(vocab_size=base.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                             intermediate_size=intermediate, num_attention_heads=heads, num_key_value_heads=kv,
                             max_position_embeddings=base.max_position_embeddings, tie_word_embeddings=True,
                             bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
                             pad_token_id=base.pad_token_id, rope_theta=getattr(base, "rope_theta", 10000.0))
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
    return model.to(device).eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--random", choices=sorted(SIZES), default=None, help="a random Llama of this size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, tokenizer = load(args.random, args.device, dtype)
    backend = TransformersBackend.from_loaded(model, tokenizer, args.random or "SmolLM2-135M", args.device)
    params = SamplingParams(n=args.samples, temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    conversations = [[{"role": "user", "content": f"What is {i} + {2 * i}? Think step by step."}]
                     for i in range(args.prompts)]
    requests = [Request(c, params, seed=i) for i, c in enumerate(conversations)]
    model.generation_config.min_new_tokens = args.max_new_tokens  # both produce every token
    texts = [backend._prompt_text(c) for c in conversations]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def bare():
        with torch.inference_mode():
            model.generate(**enc, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                           max_new_tokens=args.max_new_tokens, num_return_sequences=args.samples,
                           pad_token_id=tokenizer.pad_token_id)

    def ours():
        backend.generate_batch(requests)

    times = {}
    for name, fn in (("bare", bare), ("backend", ours)):
        fn()  # warm-up
        runs = []
        for _ in range(args.repeat):
            sync()
            started = time.perf_counter()
            fn()
            sync()
            runs.append(time.perf_counter() - started)
        times[name] = statistics.median(runs)
    tokens = args.prompts * args.samples * args.max_new_tokens
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    figures = {"device": device, "model": args.random or "SmolLM2-135M", "params": sum(p.numel() for p in model.parameters()),
               "shape": f"{args.prompts} prompts x {args.samples} samples x {args.max_new_tokens} tokens",
               "bare_tokens_per_s": tokens / times["bare"], "backend_tokens_per_s": tokens / times["backend"],
               "ratio": times["bare"] / times["backend"]}
    print(f"device: {device}; model {figures['model']} ({figures['params'] / 1e6:.0f}M); {figures['shape']}")
    print(f"bare model.generate: {figures['bare_tokens_per_s']:.0f} tok/s; backend generate_batch: "
          f"{figures['backend_tokens_per_s']:.0f} tok/s; backend / bare: {figures['ratio']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
