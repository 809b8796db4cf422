#!/usr/bin/env bash
# Run writ's benchmarks: one command, figures to stdout. Each benchmark
# reports a ratio against the limit measured in the same run.
#   WRIT_BENCH_SECONDS=N  seconds per timed loop (default 2; the issuer phases 10)
#   WRIT_BENCH_MILLION=N  tokens issued before the issuer is measured again (default 1000000)
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
# The issuer end to end (POST /token with durable audit), against the
# crypto limit measured in the same run; then again after a million tokens
# (WRIT_BENCH_MILLION=0 skips that part).
bash bench/issuer.sh build-bench
