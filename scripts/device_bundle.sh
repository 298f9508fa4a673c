#!/usr/bin/env bash
# Builds the device bundle: a self-contained linux-x64 publish of the bflora CLI for a GPU machine that has no .NET,
# without the CPU libtorch (the machine brings PyTorch's; see docs/GPU.md), into .device-bundle/ (ignored by git):
#   scripts/device_bundle.sh [OUT_DIR]
# Then it checks the bundle: libLibTorchSharp.so's GLIBCXX_3.4.32 need is weak, `bflora --help` runs, and, when the
# NuGet cache holds the CPU libtorch, a tiny eval on configs/debug.toml runs against it. It ends with the sizes, and
# fails when the bundle plus the working tree would not fit the device's 64 MiB transfer.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/.device-bundle}"
work="$root/.build/device-bundle"   # intermediates apart from ./bflora's and the tests', so neither rebuilds
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
transfer_limit=$((64 * 1024 * 1024))

# Trimming: TrimMode=partial trims only the assemblies that declare themselves trimmable (the framework), so the
# reflection and P/Invoke inside TorchSharp, Tomlyn, Parquet and bflora itself is left whole. Trimming switches off
# System.Text.Json's reflection serializer by default; bflora's metrics and checkpoint files use it, so it is kept on.
# InvariantGlobalization: the GPU machine may have no ICU (without it .NET refuses to start unless invariant), and
# the dev machine (LANG=C.UTF-8, which .NET maps to the invariant culture) runs bflora that way already.
rm -rf "$out" "$work/publish"
mkdir -p "$work"
log="$work/publish.log"
if ! dotnet publish "$root/src/Bflora.Cli/Bflora.Cli.csproj" -c Release -r linux-x64 --self-contained true \
    --artifacts-path "$work/artifacts" -o "$work/publish" --nologo -tl:off -v q \
    -p:BfloraDeviceBundle=true -p:PublishTrimmed=true -p:TrimMode=partial -p:SuppressTrimAnalysisWarnings=true \
    -p:JsonSerializerIsReflectionEnabledByDefault=true -p:InvariantGlobalization=true \
    -p:SatelliteResourceLanguages=en >"$log" 2>&1; then
  grep -E 'error' "$log" | sort -u >&2 || cat "$log" >&2
  echo "error: publishing the device bundle failed (full log: $log)" >&2
  exit 1
fi
mv "$work/publish" "$out"

# `bflora` next to the apphost: the name the docs use. It also puts BFLORA_LIBTORCH on the loader path, so
# libLibTorchSharp.so finds libtorch.so, libc10.so and libtorch_cpu.so there by name, and asks for huge pages for
# glibc's large blocks as ./bflora does (the model is built on the host before it moves to the GPU).
cat >"$out/bflora" <<'EOF'
#!/bin/sh
here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BFLORA_LIBTORCH:-}" ]; then
  export LD_LIBRARY_PATH="$BFLORA_LIBTORCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
case "${GLIBC_TUNABLES:-}" in
  *glibc.malloc.hugetlb*) ;;
  *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
exec "$here/Bflora.Cli" "$@"
EOF
chmod +x "$out/bflora"
{
  echo "commit $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (plus uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), dotnet $(dotnet --version)"
} >"$out/BUNDLE-INFO"

fail() { echo "error: $*" >&2; exit 1; }

ls "$out"/libtorch*.so "$out"/libc10.so >/dev/null 2>&1 && fail "the CPU libtorch leaked into $out"
lib="$out/libLibTorchSharp.so"
[[ -f "$lib" ]] || fail "$lib is missing"
# Read first, then match: under pipefail, grep -q leaving early would fail readelf with SIGPIPE now and then.
version_needs="$(readelf -V "$lib")"
grep -Eq 'Name: GLIBCXX_3\.4\.32 +Flags: WEAK' <<<"$version_needs" || fail "GLIBCXX_3.4.32 is not weak in $lib"
"$out/bflora" --help >/dev/null || fail "'bflora --help' failed in the bundle"
echo "device_bundle: libLibTorchSharp.so needs GLIBCXX_3.4.32 weakly; --help runs"

cpu_libtorch=""
for cache in "${NUGET_PACKAGES:-$HOME/.nuget/packages}" /opt/nuget/packages; do
  candidate="$cache/libtorch-cpu-linux-x64/2.10.0/runtimes/linux-x64/native"
  [[ -f "$candidate/libtorch_cpu.so" ]] && { cpu_libtorch="$candidate"; break; }
done
if [[ -n "$cpu_libtorch" ]]; then
  # BundledFiles looks for data/ upwards from the binary, so the check runs from inside the checkout.
  (cd "$root" && BFLORA_LIBTORCH="$cpu_libtorch" "$out/bflora" eval --config configs/debug.toml --num-samples 4 \
      >"$work/eval.log" 2>&1) || { cat "$work/eval.log" >&2; fail "the bundle's eval against the CPU libtorch failed"; }
  echo "device_bundle: eval on configs/debug.toml runs against $cpu_libtorch"
else
  echo "device_bundle: no CPU libtorch in the NuGet cache; the eval check was skipped"
fi

bundle_bytes=$(du -sb "$out" | cut -f1)
# What travels besides the carried bundle: tracked files (as they are on disk) and untracked ones git does not ignore.
tree_bytes=$(cd "$root" && git ls-files -z --cached --others --exclude-standard \
  | { xargs -0 -r stat -c %s -- 2>/dev/null || true; } | awk '{ s += $1 } END { print s + 0 }')
total=$((bundle_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "device_bundle: $out holds $(mib "$bundle_bytes") in $(find "$out" -type f | wc -l) files;" \
  "with the working tree ($(mib "$tree_bytes")) $(mib "$total") travel of $(mib "$transfer_limit")"
((total < transfer_limit)) || fail "bundle plus working tree exceed the device's 64 MiB transfer"
