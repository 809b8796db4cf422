#!/usr/bin/env bash
# Run writ's benchmarks: one command, figures to stdout. Each benchmark
# reports a ratio against the limit measured in the same run.
#   WRIT_BENCH_SECONDS=N  seconds per timed loop (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DWRIT_WERROR=ON >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
tmp=$(mktemp -d /tmp/writ-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
./build-bench/writ token init --dir "$tmp" >/dev/null
./build-bench/writ -c "$tmp/writ.conf" key generate --alg ES256 >/dev/null
echo "# writ benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
./build-bench/bench/bench_sign "$tmp/writ.conf"
./build-bench/bench/bench_verify
./build-bench/bench/bench_lib
