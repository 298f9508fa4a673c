#!/usr/bin/env bash
# Memory of real training runs against `bflora plan`. A benchmark, not a test (minutes, most of the machine's RAM).
#   scripts/bench_memory.sh plan   1B flavor (random init, seq 128, batch 1, LoRA r 32, 2 steps) at world 1 and 2:
#                                  rank 0's peak resident memory minus its resident memory just before the model was
#                                  built (runtime, libtorch, MPI, tokenizer, data), next to the plan's total
#   scripts/bench_memory.sh 8b     8B flavor, same settings, 2 ranks, one full step: peak memory and step time
#   scripts/bench_memory.sh        both
# The trainer reports both numbers itself (Linux VmHWM and VmRSS) in its "Memory of rank 0" line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TERM=dumb
./bflora --help >/dev/null   # build once, outside the measurements
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The debug config (random init, bundled corpus, the seed's flips) with a real flavor's dimensions and the Llama-3
# tokenizer.
settings=(--set model.tokenizer=\"llama3\" --set training.seq_len=128 --set training.local_batch_size=1
          --set training.gradient_accumulation_steps=1 --set training.log_freq=1 --set lora.r=32)

# run NAME WORLD FLAVOR STEPS: trains and leaves the log in $work/NAME.log.
run() {
  local name=$1 world=$2 flavor=$3 steps=$4
  local cmd=(./bflora train --config configs/debug.toml "${settings[@]}" --set model.flavor=\"$flavor\"
             --set parallelism.fsdp_degree="$world" --steps "$steps" --out "$work/$name")
  if [[ $world == 1 ]]; then "${cmd[@]}" >"$work/$name.log" 2>&1
  else mpirun -n "$world" --bind-to none "${cmd[@]}" >"$work/$name.log" 2>&1
  fi || { cat "$work/$name.log" >&2; echo "error: the $name run failed" >&2; exit 1; }
}

# Fields of the trainer's lines: peak resident bytes, bytes before the model, params per rank, last step's seconds.
peak() { sed -n 's/^Memory of rank 0: peak resident \([0-9]*\) bytes.*/\1/p' "$work/$1.log"; }
before() { sed -n 's/^Memory of rank 0: .*, \([0-9]*\) before the model.*/\1/p' "$work/$1.log"; }
params() { sed -n 's/.*Params per rank: \([0-9]*\) bytes.*/\1/p' "$work/$1.log"; }
elapsed() { sed -n 's/^Step .*Elapsed: \([0-9.]*\).*/\1/p' "$work/$1.log" | tail -n 1; }

plan_total() {
  ./bflora plan --config configs/debug.toml "${settings[@]}" --set model.flavor=\"$2\" --world "$1" --json "$work/plan.json" >/dev/null
  sed -n 's/.*"total": *\([0-9]*\).*/\1/p' "$work/plan.json"
}

gib() { awk -v b="$1" 'BEGIN { printf "%.2f GiB", b / 2^30 }'; }

plan_check() {
  echo "plan vs reality: 1B flavor, random init, seq 128, batch 1, LoRA r 32, 2 steps (rank 0)"
  printf '%-6s %-12s %-14s %-12s %-12s %-12s %s\n' world "peak" "before model" "difference" "plan total" "params" "difference/plan"
  for world in 1 2; do
    run "1b-$world" "$world" 1B 2
    local p b plan
    p=$(peak "1b-$world"); b=$(before "1b-$world"); plan=$(plan_total "$world" 1B)
    printf '%-6s %-12s %-14s %-12s %-12s %-12s %s\n' "$world" "$(gib "$p")" "$(gib "$b")" "$(gib $((p - b)))" \
      "$(gib "$plan")" "$(gib "$(params "1b-$world")")" "$(awk -v r=$((p - b)) -v q="$plan" 'BEGIN { printf "%.3f", r / q }')"
  done
}

eight_b() {
  echo "8B flavor, random init, seq 128, batch 1, LoRA r 32, 2 ranks, one full step (forward, backward, reduce-scatter, AdamW)"
  local start=$SECONDS
  run 8b 2 8B 1
  local p b
  p=$(peak 8b); b=$(before 8b)
  echo "  rank 0 peak resident     $(gib "$p") ($(gib "$b") before the model; plan total $(gib "$(plan_total 2 8B)"))"
  echo "  params per rank          $(gib "$(params 8b)")"
  echo "  step time                $(elapsed 8b) s (whole run, model build and checkpoint included: $((SECONDS - start)) s)"
}

case "${1:-all}" in
  plan) plan_check ;;
  8b) eight_b ;;
  all) plan_check; echo; eight_b ;;
  *) echo "error: unknown part '$1' (plan, 8b or nothing for both)" >&2; exit 2 ;;
esac
