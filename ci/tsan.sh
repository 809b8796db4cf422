#!/usr/bin/env bash
# ci/tsan.sh - under ThreadSanitizer:
#   1. libwrit's verifier: 8 threads verify (cache hits and full
#      verifications) while the JWK Set is replaced every second
#      (tests/test_verifier.c);
#   2. the issuer's threads (HTTP, the worker pool, the audit sync, the key
#      thread) through tests/test_issuer.py and tests/test_rotation.py,
#      loads, rotations and SIGTERM under load included; each process's
#      reports go to a log file, and any fails the step.
# A few minutes; exits non-zero on any data race report.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWRIT_BENCH=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build build-tsan -j"$(nproc)" --target test_verifier
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ./build-tsan/tests/test_verifier
cmake --build build-tsan -j"$(nproc)" --target writ writ-issuer test_p11_shim test_workq
TSAN_OPTIONS="halt_on_error=1" ./build-tsan/tests/test_workq
logs=$(mktemp -d /tmp/writ-tsan-XXXXXX)
trap 'rm -rf "$logs"' EXIT
for t in test_issuer test_rotation; do
  TSAN_OPTIONS="halt_on_error=0 log_path=$logs/report" WRIT_BIN=build-tsan/writ \
    WRIT_P11_SHIM="$PWD/build-tsan/tests/libtest_p11_shim.so" /usr/bin/python3 "tests/$t.py" ||
    { cat "$logs"/report.* 2>/dev/null; exit 1; }
done
if compgen -G "$logs/report.*" >/dev/null; then
  cat "$logs"/report.*
  echo "ThreadSanitizer reported the above in the issuer or the CLI" >&2
  exit 1
fi
