#!/usr/bin/env bash
# ci/tsan.sh - libwrit's verifier under ThreadSanitizer: 8 threads verify
# (cache hits and full verifications) while the JWK Set is replaced every
# second (tests/test_verifier.c). About a minute; exits non-zero on any
# data race report.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWRIT_BENCH=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build build-tsan -j"$(nproc)" --target test_verifier
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ./build-tsan/tests/test_verifier
