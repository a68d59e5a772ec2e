#!/usr/bin/env bash
# The GPU check: the GPU test tier, then the trainer and the transformers backend against their bare baselines
# at one shape (a random 321M Llama with SmolLM2's tokenizer; 256 rows of ~1,000 response tokens, batch 16;
# 64 prompts x 8 samples x 256 tokens), all in one JSON. No network: the models are built at random and nothing
# is downloaded. About 5 minutes on one H200. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default: gpu-check/; writes OUT_DIR/gpu_check.json
#
# A bare GPU machine lacks this project's Python dependencies: see docs/gpu.md for bringing them as wheels.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
python=${PYTHON:-python}
export TOKENIZERS_PARALLELISM=false

"$python" -m pytest -q -p no:cacheprovider -m gpu --junitxml="$out/gpu_tests.xml" 2>&1 | tail -n 30 | tee "$out/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

# the shape; the variables shrink it for a dry run on a CPU (ROWS=8 TOKENS=32 BATCH=4 SIZE=135m ...)
shape=(--synthetic "${ROWS:-256}" --response-tokens "${TOKENS:-1000}" --batch-size "${BATCH:-16}"
       --random "${SIZE:-321m}" --steps "${STEPS:-3}")
"$python" benchmarks/trainer_efficiency.py "${shape[@]}" --json "$out/trainer_full.json"
"$python" benchmarks/trainer_efficiency.py "${shape[@]}" --lora --json "$out/trainer_lora.json"
"$python" benchmarks/trainer_efficiency.py "${shape[@]}" --gradient-checkpointing --json "$out/trainer_checkpointing.json"
"$python" benchmarks/transformers_generate.py --random "${SIZE:-321m}" --prompts "${PROMPTS:-64}" \
    --samples "${SAMPLES:-8}" --max-new-tokens "${NEW_TOKENS:-256}" --repeat 2 --json "$out/generate.json"

"$python" - "$out" "$tests_rc" <<'PY'
import json, subprocess, sys
from pathlib import Path

out, rc = Path(sys.argv[1]), int(sys.argv[2])
read = lambda name: json.loads((out / name).read_text()) if (out / name).exists() else None
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {"commit": commit or None, "gpu_tests": {"exit_code": rc, "summary": (out / "gpu_tests.txt").read_text().strip().splitlines()[-1:]},
          "trainer": {k: read(f"trainer_{k}.json") for k in ("full", "lora", "checkpointing")},
          "generate": read("generate.json")}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
PY
