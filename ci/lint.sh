#!/usr/bin/env bash
# Style and hygiene checks: clang-format clean, and no banned functions
# (unbounded string functions, non-constant-time compares of secrets are
# reviewed by hand; these are the mechanical ones, as curl's checksrc does).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t SRC < <(git ls-files '*.c' '*.h')
fail=0

if command -v clang-format >/dev/null; then
  for f in "${SRC[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then
      echo "clang-format: $f is not formatted (clang-format -i $f)"
      fail=1
    fi
  done
fi

BANNED='\b(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol|rand|srand|mktemp|tmpnam|alloca)\s*\('
if grep -nE "$BANNED" "${SRC[@]}"; then
  echo "banned function used (see ci/lint.sh for the list and why)"
  fail=1
fi
# memcmp on MACs or signatures must be CRYPTO_memcmp: flag memcmp near "sig"/"mac".
if grep -nE 'memcmp\([^)]*(mac|tag)' "${SRC[@]}"; then
  echo "use CRYPTO_memcmp for MAC/tag comparison"
  fail=1
fi
exit $fail
