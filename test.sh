#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, builds, runs every test and ends with
# "N passed, N failed, N skipped". Extra arguments go to `dotnet test` (e.g. --filter Bitflip).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
# mpirun refuses to start as root without these; the distributed tests launch it for real.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if ! command -v mpirun >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Open MPI (openmpi-bin, libopenmpi-dev) from apt"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev) >/dev/null \
      || echo "test.sh: warning: could not install Open MPI; distributed tests will be skipped"
  else
    echo "test.sh: warning: mpirun not found and not root; install openmpi-bin libopenmpi-dev for the distributed tests"
  fi
fi

# The GPU flip kernels are also compiled as host code by the tests (their CPU twin); Debian's g++ does that.
if ! command -v g++ >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing g++ from apt"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++) >/dev/null \
      || echo "test.sh: warning: could not install g++; the GPU kernel emulation tests will fail"
  else
    echo "test.sh: warning: g++ not found and not root; install g++ for the GPU kernel emulation tests"
  fi
fi

# NVRTC (CUDA's run-time compiler) needs no GPU: the tests compile the GPU flip kernels with it for real. Debian
# ships it in non-free; it is fetched once into .test-tools/nvrtc, not installed.
nvrtc="$root/.test-tools/nvrtc"
if [[ ! -f "$nvrtc/libnvrtc.so.11.2" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test.sh: fetching Debian's NVRTC (libnvrtc11.2, non-free) into .test-tools/nvrtc"
  apt_dir="$(mktemp -d)"
  echo "deb http://deb.debian.org/debian bookworm non-free" >"$apt_dir/sources.list"
  apt_opts=(-oDir::Etc::SourceList="$apt_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
            -oDir::State::Lists="$apt_dir/lists" -oDir::Cache="$apt_dir/cache" -oAPT::Sandbox::User=root)
  if (mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$nvrtc" && apt-get "${apt_opts[@]}" update -qq \
        && cd "$apt_dir" && apt-get "${apt_opts[@]}" download -qq libnvrtc11.2 libnvrtc-builtins11.8 \
        && for deb in "$apt_dir"/*.deb; do dpkg -x "$deb" "$apt_dir/root"; done \
        && cp -a "$apt_dir"/root/usr/lib/x86_64-linux-gnu/libnvrtc* "$nvrtc"/) >/dev/null 2>&1; then :
  else
    echo "test.sh: warning: could not fetch NVRTC; the kernel compile test will fail"
  fi
  rm -rf "$apt_dir"
fi

results="$root/.test-results"
rm -rf "$results"
if ! dotnet build tests/Bflora.Tests/Bflora.Tests.csproj -c Release --nologo -v q -clp:ErrorsOnly; then
  echo "test.sh: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
dotnet test tests/Bflora.Tests/Bflora.Tests.csproj -c Release --no-build --nologo \
  --logger "trx;LogFileName=results.trx" --logger "console;verbosity=normal" --results-directory "$results" "$@"
status=$?

trx="$results/results.trx"
if [[ ! -f "$trx" ]]; then
  echo "test.sh: no test results were written"
  echo "0 passed, 1 failed"
  exit 1
fi
counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
count() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
passed=$(count passed); failed=$(count failed); total=$(count total)
skipped=$(( total - passed - failed ))
echo "${passed:-0} passed, ${failed:-0} failed, ${skipped} skipped"
if [[ "${failed:-0}" != 0 || $status != 0 ]]; then exit 1; fi
