#!/usr/bin/env bash
# Run the SoftHSM2 integration test (pkcs11 layer: keygen, signing from
# threads and a forked child, fault recovery), the store test and the
# policy test under valgrind memcheck: any leak in writ's code or invalid
# access fails. The timing-driven lost-token storm is skipped here (see
# tests/test_p11.c); it runs in the plain and ASan builds.
#   ci/valgrind.sh BUILD_DIR
set -euo pipefail
B=${1:?usage: ci/valgrind.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export WRIT_TESTDATA="$ROOT/tests/data"
export WRIT_TEST_UNDER_VALGRIND=1
for t in test_p11 test_store test_policy; do
  echo "== valgrind $t"
  set +e
  valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --keep-debuginfo=yes --suppressions="$ROOT/tests/valgrind.supp" \
    --trace-children=no "$B/tests/$t" >"$B/valgrind-$t.log" 2>&1
  rc=$?
  set -e
  grep -v '^ok ' "$B/valgrind-$t.log" | tail -n 40
  [ "$rc" -eq 0 ] || { echo "valgrind: $t failed (exit $rc)"; exit 1; }
done
