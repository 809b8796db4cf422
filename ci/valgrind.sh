#!/usr/bin/env bash
# Run the SoftHSM2 integration test (pkcs11 layer: keygen, signing from
# threads and a forked child, fault recovery) and the store test under
# valgrind memcheck: any leak in writ's code or invalid access fails.
#   ci/valgrind.sh BUILD_DIR
set -euo pipefail
B=${1:?usage: ci/valgrind.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export WRIT_TESTDATA="$ROOT/tests/data"
for t in test_p11 test_store test_policy; do
  echo "== valgrind $t"
  valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --keep-debuginfo=yes --suppressions="$ROOT/tests/valgrind.supp" \
    --trace-children=no "$B/tests/$t" 2>&1 | tail -n 5
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "valgrind: $t failed"; exit 1; }
done
