#!/usr/bin/env bash
# The README's test command: install dependencies, then
#   1. a -Werror build + every ctest (unit, SoftHSM2 integration, interop),
#      and one short pass of the issuer benchmark (it must run clean);
#   2. the same under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the HSM integration test again under valgrind (leaks, bad reads),
#      and the verifier library's and the issuer's threads under ThreadSanitizer;
#   4. clang builds of the libFuzzer targets, replaying every corpus;
#   5. style and hygiene: clang-format, banned functions.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=$(nproc)

step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
bash ci/deps.sh

step "build (-Werror) and test"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWRIT_WERROR=ON >/dev/null
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure -j"$JOBS")

step "benchmark smoke run: the issuer under load, no errors (figures not judged here)"
WRIT_BENCH_SECONDS=1 WRIT_BENCH_ROUNDS=1 WRIT_BENCH_MILLION=2000 bash bench/issuer.sh build

step "ASan + UBSan build and test"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWRIT_SANITIZE=ON -DWRIT_BENCH=OFF >/dev/null
cmake --build build-asan -j"$JOBS"
# SoftHSM2 and OpenSSL keep process-lifetime caches; leaks in writ's own
# code are still reported because the suppressions name only those modules.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$JOBS")

step "valgrind on the HSM integration test"
bash ci/valgrind.sh build

step "ThreadSanitizer: verifiers racing a key-set refresh; the issuer under its tests"
bash ci/tsan.sh

step "fuzz targets: corpus replay"
CC=clang cmake -S . -B build-fuzz -DWRIT_FUZZ=ON -DWRIT_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_targets
bash ci/fuzz-replay.sh build-fuzz

step "style and hygiene"
bash ci/lint.sh

echo
echo "all checks passed"
