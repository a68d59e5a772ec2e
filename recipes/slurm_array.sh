#!/bin/bash
# MATH-500 over a Slurm array: every stage runs as N array tasks, each taking its share of the shards
# (--shard i/N), all writing one run folder on a shared filesystem. Each stage waits for the previous array
# (afterany: a task that exits 3, rows in error, still lets the next stage run; a plain resubmission of the
# same array retries exactly those rows).
#
#   sbatch recipes/slurm_array.sh            # submits the four stages with dependencies, then exits
#
# The policy is a vLLM server reachable from every node (generate.backend.options.base_url); for engines
# inside the tasks use `--set generate.backend.name=transformers` and request a GPU per task (--gres=gpu:1).
#SBATCH --job-name=sgpo-submit
#SBATCH --time=00:05:00
set -euo pipefail

RECIPE=${RECIPE:-recipes/math500_vllm.yaml}
RUN=${RUN:-/shared/runs/math500}
N=${N:-8}   # tasks per stage; the generate stage has ceil(prompts / prompts_per_shard) shards to share

stage_job() {  # stage, dependency -> job id
  sbatch --parsable --job-name="sgpo-$1" --array="0-$((N - 1))" --time=04:00:00 ${2:+--dependency=afterany:$2} \
    --wrap "sgpo-data $1 --recipe $RECIPE --out $RUN --shard \$SLURM_ARRAY_TASK_ID/\$SLURM_ARRAY_TASK_COUNT"
}

generate=$(stage_job generate)
judge=$(stage_job judge "$generate")
# score and export have one shard each: a single task
score=$(sbatch --parsable --job-name=sgpo-score --dependency="afterany:$judge" \
  --wrap "sgpo-data score --recipe $RECIPE --out $RUN")
sbatch --job-name=sgpo-export --dependency="afterany:$score" --wrap "sgpo-data export --recipe $RECIPE --out $RUN"
