#!/usr/bin/env bash
# The GPU check, run on the lent GPU machine from the checkout root after scripts/device_bundle.sh built .device-bundle/
# here and the run carried it there (docs/GPU.md):   bash scripts/device_check.sh
# Stages, each under its own time limit, each run even when an earlier one failed:
#   torch      find a Python with PyTorch; its torch/lib becomes BFLORA_LIBTORCH
#   link       ldd -r of the bundle's libLibTorchSharp.so against that libtorch (symbols it lacks)
#   selftest   the GPU test subset of bflora
#   bflora     bflora's GPU training benchmark (one JSON line)
#   pytorch    bench/pytorch_baseline.py on the same shape (one JSON line), each block recomputed as the seed does
#   pytorch_keep   the same without recompute (--no-checkpointing): bflora keeps activations on one process, so
#              this is the like-for-like row
# then a markdown table (impl, tokens/s, step, MFU, bflora ÷ PyTorch). Everything goes to $OUT (else ./device-out):
# one log per stage, summary.md, results.json: 8 files, the most a device run brings back. Exit 0 only when every
# stage passed.
# The commands and limits below may be overridden from the environment, e.g. BFLORA_BENCH="... --batch 2".
# NOMINAL_PEAK_TFLOPS (default 989, the dense bf16 peak of an H100 or H200 SXM) adds a second MFU column.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bundle="$root/.device-bundle"
BFLORA_SELFTEST="${BFLORA_SELFTEST:-$bundle/bflora selftest-gpu}"
BFLORA_BENCH="${BFLORA_BENCH:-$bundle/bflora bench --device cuda}"
PYTORCH_BENCH="${PYTORCH_BENCH:-bench/pytorch_baseline.py --seq-len 2048 --batch 1 --warmup 3 --steps 10}"
# Seconds; together under 9 minutes (530 s) at most, inside the device's 10-minute command limit.
LIMIT_TORCH="${LIMIT_TORCH:-45}" LIMIT_LINK="${LIMIT_LINK:-15}" LIMIT_SELFTEST="${LIMIT_SELFTEST:-100}"
LIMIT_BFLORA="${LIMIT_BFLORA:-170}" LIMIT_PYTORCH="${LIMIT_PYTORCH:-100}"

out="${OUT:-$root/device-out}"
# A failing bflora stage then leaves its stack trace in the log: there is little device time to reproduce it.
export BFLORA_DEBUG=1
mkdir -p "$out"
# The machine's lines and the table go into summary.md; their parts wait in a scratch folder.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
: >"$scratch/env.txt"
failed=()

# run_stage NAME LIMIT COMMAND-STRING: the command's output goes to NAME.log; a failure is reported, not fatal.
run_stage() {
  local name="$1" limit="$2" command="$3" log="$out/$1.log" start=$SECONDS rc=0 why
  echo "== $name: $command"
  timeout --kill-after=10 "$limit" bash -c "exec $command" >"$log" 2>&1 || rc=$?
  if ((rc == 0)); then
    echo "   ok ($((SECONDS - start)) s)"
    return 0
  fi
  if ((rc == 124 || rc == 137)); then why="timed out after $limit s"; else why="exit $rc"; fi
  fail "$name" "$why ($((SECONDS - start)) s)" "$log"
  return 1
}

# fail NAME WHY [LOG]: records a failed or skipped stage and shows the end of its log.
fail() {
  echo "   FAILED: $2"
  failed+=("$1: $2")
  if [[ -n "${3:-}" && -s "$3" ]]; then tail -n 8 "$3" | sed 's/^/   | /'; fi
}

# note LINE: a line about the machine, shown now and at the top of summary.md.
note() { echo "$1" | tee -a "$scratch/env.txt"; }

note "device_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), output in $out"
if command -v nvidia-smi >/dev/null 2>&1; then
  note "gpu: $(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>&1 | head -n 4 | paste -sd ';')"
else
  note "gpu: nvidia-smi not found"
fi
if [[ -f "$bundle/BUNDLE-INFO" ]]; then
  while read -r line; do note "bundle: $line"; done <"$bundle/BUNDLE-INFO"
else
  note "bundle: $bundle/BUNDLE-INFO missing"
fi

# --- torch: the first Python that imports torch and has the shared libtorch next to it.
echo "== torch: looking for a Python with PyTorch"
python=""
start=$SECONDS
# PYTHON first, then the ones on PATH, then any virtual environment's python3 in the usual places.
venvs=$(timeout 10 find /opt /root /home /venv /workspace /usr/local -maxdepth 4 -path '*/bin/python3' 2>/dev/null)
for candidate in ${PYTHON:-} python3 python $venvs; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  ((SECONDS - start < LIMIT_TORCH)) || break
  lib=$(timeout "$LIMIT_TORCH" "$candidate" -c \
    'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>>"$out/torch.log" | tail -n 1)
  if [[ -n "$lib" && -f "$lib/libtorch_cpu.so" ]]; then python="$candidate"; break; fi
done
if [[ -n "$python" ]]; then
  export BFLORA_LIBTORCH="${BFLORA_LIBTORCH:-$lib}"
  note "torch: $(timeout "$LIMIT_TORCH" "$python" -c 'import torch; print(torch.__version__, "cuda",
      torch.version.cuda, "available", torch.cuda.is_available())' 2>>"$out/torch.log" | tail -n 1)"
  echo "   ok: $python, BFLORA_LIBTORCH=$BFLORA_LIBTORCH"
else
  fail torch "no Python that imports torch (with torch/lib/libtorch_cpu.so); set PYTHON=..." "$out/torch.log"
fi

# --- link, selftest, bflora: the bundle against that libtorch.
# The transfer may not keep the executable bits.
chmod +x "$bundle/bflora" "$bundle/Bflora.Cli" 2>/dev/null
have_bundle=1
[[ -x "$bundle/bflora" ]] || { have_bundle=0; echo "== bundle: $bundle/bflora missing (build it with scripts/device_bundle.sh, carry .device-bundle)"; }
if ((have_bundle)) && [[ -n "${BFLORA_LIBTORCH:-}" ]]; then
  if run_stage link "$LIMIT_LINK" "env LD_LIBRARY_PATH='$BFLORA_LIBTORCH' ldd -r '$bundle/libLibTorchSharp.so'"; then
    missing=$(grep -c 'undefined symbol' "$out/link.log")
    if grep -q '=> not found' "$out/link.log" || ((missing > 0)); then
      fail link "$missing libtorch symbols missing, or a library not found (a call to one ends bflora)" "$out/link.log"
      grep -o 'undefined symbol: [^ ]*' "$out/link.log" | cut -d' ' -f3 | { c++filt 2>/dev/null || cat; } \
        | head -n 5 | sed 's/^/   | /'
    else
      echo "   every symbol of libLibTorchSharp.so resolves in $BFLORA_LIBTORCH"
    fi
  fi
  run_stage selftest "$LIMIT_SELFTEST" "$BFLORA_SELFTEST"
  run_stage bflora "$LIMIT_BFLORA" "$BFLORA_BENCH"
else
  for stage in link selftest bflora; do
    echo "== $stage"
    fail "$stage" "skipped: $( ((have_bundle)) && echo 'no libtorch (see torch)' || echo 'no bundle')"
  done
fi

# --- pytorch: the baseline with the Python found above.
if [[ -n "$python" ]]; then
  run_stage pytorch "$LIMIT_PYTORCH" "'$python' $PYTORCH_BENCH"
  run_stage pytorch_keep "$LIMIT_PYTORCH" "'$python' $PYTORCH_BENCH --no-checkpointing"
else
  for stage in pytorch pytorch_keep; do
    echo "== $stage"
    fail "$stage" "skipped: no Python with torch"
  done
fi

# --- the table, from the last JSON line with tokens_per_s of each benchmark's log.
formatter="$(command -v python3 || echo "$python")"
if [[ -n "$formatter" ]]; then
  "$formatter" - "$out" "${failed[@]}" >"$scratch/table.md" <<'EOF'
import json, os, sys
out, failed = sys.argv[1], sys.argv[2:]

def result(stage):
    try:
        lines = open(os.path.join(out, stage + ".log"), errors="replace").read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "tokens_per_s" in value:
            return value
    return None

results = {stage: result(stage) for stage in ("bflora", "pytorch", "pytorch_keep")}
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=2)
cell = lambda r, key, fmt: fmt.format(r[key]) if r and isinstance(r.get(key), (int, float)) else "—"
nominal = float(os.environ.get("NOMINAL_PEAK_TFLOPS", "989"))
for r in results.values():
    if r and isinstance(r.get("mfu"), (int, float)) and isinstance(r.get("peak_tflops"), (int, float)):
        r["mfu_nominal"] = r["mfu"] * r["peak_tflops"] / nominal
for r in results.values():
    if r:
        r.setdefault("memory_gib", r.get("device_memory_used_gib", r.get("peak_memory_gib")))
print(f"\n| impl | tokens/s | step s | MFU (measured peak) | peak TFLOP/s | MFU ({nominal:g} TFLOP/s) | GPU GiB |"
      "\n|---|---|---|---|---|---|---|")
for stage, r in results.items():
    print(f"| {stage} | {cell(r, 'tokens_per_s', '{:,.0f}')} | {cell(r, 'step_s', '{:.4f}')} | "
          f"{cell(r, 'mfu', '{:.3f}')} | {cell(r, 'peak_tflops', '{:.1f}')} | {cell(r, 'mfu_nominal', '{:.3f}')} | "
          f"{cell(r, 'memory_gib', '{:.1f}')} |")
print("\nGPU GiB: bflora, memory in use after its timed steps (driver: total − free, context and allocator cache"
      " included); PyTorch, its peak allocated tensors (torch.cuda.max_memory_allocated), a smaller measure.")
b = results["bflora"]
if b and "bitflip_vs_copy" in b:
    print(f"\nbflora on the GPU: flip_overhead {cell(b, 'flip_overhead', '{:.3f}')}, copy {cell(b, 'copy_gbps', '{:.0f}')} GB/s, "
          f"bitflip_vs_copy {cell(b, 'bitflip_vs_copy', '{:.2f}')}, bitflip_philox_vs_copy {cell(b, 'bitflip_philox_vs_copy', '{:.2f}')}")
if b and isinstance(b.get("step_queued_s"), (int, float)) and b.get("step_s"):
    share = b["step_queued_s"] / b["step_s"]
    print(f"\nbflora's host had queued the step's forward and backward at {b['step_queued_s'] * 1e3:.1f} of "
          f"{b['step_s'] * 1e3:.1f} ms ({share:.0%}): " + ("host-bound, look at ops per Linear first" if share > 0.8
          else "the GPU is the limit, look at the kernels first"))
for stage, what in (("pytorch", "recomputing each block, as the seed"), ("pytorch_keep", "keeping activations, as bflora")):
    p = results[stage]
    if b and p and b.get("tokens_per_s") and p.get("tokens_per_s"):
        print(f"\nbflora ÷ PyTorch ({what}) tokens/s: **{b['tokens_per_s'] / p['tokens_per_s']:.2f}**")
    else:
        print(f"\nbflora ÷ PyTorch ({what}) tokens/s: — (a benchmark gave no result)")
print("\nfailed stages: " + ("; ".join(failed) if failed else "none"))
EOF
  cat "$scratch/table.md"
  { cat "$scratch/env.txt"; cat "$scratch/table.md"; } >"$out/summary.md"
else
  echo "no python3 to build the table; the benchmark logs are in $out" | tee "$out/summary.md"
fi
((${#failed[@]} == 0))
