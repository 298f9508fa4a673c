#!/usr/bin/env bash
# Launches `bflora train` (or `bflora eval`) on NPROC_PER_NODE x NNODES ranks with Open MPI, like the original's
# torchrun run.sh:
#   scripts/run.sh CONFIG [train args...]
#   scripts/run.sh eval CONFIG [eval args...]
# Environment:
#   NPROC_PER_NODE  ranks per node [the config's parallelism.fsdp_degree ÷ NNODES, or a --set of it among the args]
#   NNODES          nodes [1]
#   NODE_RANK       [0]; mpirun on node 0 starts the ranks on every node (over ssh), so other nodes do nothing
#   HOSTFILE        an Open MPI hostfile (one "host slots=N" line per node), or
#   HOSTS           host1,host2,... (NNODES names), or
#   MASTER_ADDR     the one host to run on when NNODES is 1 [this machine]
#   MPIRUN_ARGS     extra mpirun arguments (e.g. "--mca btl_tcp_if_include eth0")
# Ctrl-C or SIGTERM during train: the first stops every rank after its current step, checkpointed (exit 138);
# a second ends the job at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command=train
if [[ "${1:-}" == train || "${1:-}" == eval ]]; then command="$1"; shift; fi
if [[ $# -lt 1 || ! -f "$1" ]]; then
  echo "error: usage: scripts/run.sh [train|eval] CONFIG [args...] (CONFIG must be a file)" >&2
  exit 2
fi
config="$1"; shift
command -v mpirun >/dev/null || { echo "error: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 2; }

NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
if [[ "$NODE_RANK" != 0 ]]; then
  echo "run.sh: node $NODE_RANK has nothing to start: mpirun on node 0 launches the ranks on every host" >&2
  exit 0
fi

# The fsdp degree: a --set among the arguments wins over the config file's [parallelism] fsdp_degree (default 1).
fsdp=""
prev=""
for a in "$@"; do
  if [[ "$prev" == "--set" && "$a" =~ ^parallelism\.fsdp_degree=([0-9]+)$ ]]; then fsdp="${BASH_REMATCH[1]}"; fi
  prev="$a"
done
if [[ -z "$fsdp" ]]; then
  fsdp=$(awk '/^[[:space:]]*\[/ { sec = $0; gsub(/[][[:space:]]/, "", sec) }
              sec == "parallelism" && /^[[:space:]]*fsdp_degree[[:space:]]*=/ { split($0, kv, "="); sub(/#.*/, "", kv[2]); gsub(/[^0-9]/, "", kv[2]); print kv[2]; exit }' "$config")
  fsdp="${fsdp:-1}"
fi
NPROC_PER_NODE="${NPROC_PER_NODE:-$(( fsdp / NNODES ))}"
world=$(( NPROC_PER_NODE * NNODES ))
if (( NPROC_PER_NODE < 1 )); then
  echo "error: NPROC_PER_NODE must be at least 1 (fsdp_degree $fsdp over $NNODES nodes)" >&2
  exit 2
fi

hosts=()
if [[ -n "${HOSTFILE:-}" ]]; then
  hosts=(--hostfile "$HOSTFILE")
elif [[ -n "${HOSTS:-}" ]]; then
  IFS=, read -r -a names <<<"$HOSTS"
  if (( ${#names[@]} != NNODES )); then echo "error: HOSTS names ${#names[@]} hosts but NNODES is $NNODES" >&2; exit 2; fi
  hosts=(--host "$(printf "%s:$NPROC_PER_NODE," "${names[@]}" | sed 's/,$//')")
elif (( NNODES > 1 )); then
  echo "error: NNODES=$NNODES needs HOSTFILE or HOSTS=host1,host2,... (MASTER_ADDR names only one host)" >&2
  exit 2
elif [[ -n "${MASTER_ADDR:-}" ]]; then
  hosts=(--host "$MASTER_ADDR:$NPROC_PER_NODE")
fi

if [[ "$(id -u)" == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# Build once here, not in every rank (the wrapper would serialise them on a lock anyway).
"$root/bflora" --help >/dev/null

# Environment the ranks on other nodes need too.
forward=()
for v in PATH HF_HOME BFLORA_DEBUG; do [[ -n "${!v:-}" ]] && forward+=(-x "$v"); done

# --bind-to none: each rank runs cores ÷ ranks-per-node torch threads, which a one-core binding would squeeze.
launch=(mpirun -n "$world" --map-by "ppr:$NPROC_PER_NODE:node" --bind-to none "${hosts[@]}" "${forward[@]}")
# shellcheck disable=SC2206
launch+=(${MPIRUN_ARGS:-} "$root/bflora" "$command" --config "$config" "$@")
echo "+ ${launch[*]}" >&2
if [[ "$command" != train ]]; then exec "${launch[@]}"; fi

# Ctrl-C or SIGTERM on mpirun would end the job (Open MPI sends the ranks SIGTERM, then SIGKILL a second later) and
# lose the steps since the last checkpoint. So mpirun runs in a session of its own, out of the terminal's reach, and
# the first Ctrl-C/SIGTERM here becomes SIGUSR1, which mpirun forwards to every rank: they stop after the same step
# and checkpoint it. A second one ends the job at once.
setsid "${launch[@]}" &
job=$!
stops=0
stop() {
  stops=$((stops + 1))
  if (( stops == 1 )); then
    echo "run.sh: stopping every rank after its current step (checkpointed); press Ctrl-C again to end the job now" >&2
    kill -USR1 "$job" 2>/dev/null || true
  else
    kill -INT "$job" 2>/dev/null || true
  fi
}
trap stop INT TERM
# wait returns early when a trapped signal arrives; the job's own exit status ends the loop.
while true; do
  set +e
  wait "$job"
  status=$?
  set -e
  kill -0 "$job" 2>/dev/null || exit "$status"
done
