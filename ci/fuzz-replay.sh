#!/usr/bin/env bash
# ci/fuzz-replay.sh BUILD_DIR [SECONDS]
#
# For each libFuzzer target built in BUILD_DIR (CC=clang, -DWRIT_FUZZ=ON):
# replay every seed in fuzz/corpus/<name>/, then fuzz for SECONDS (default
# 20) starting from a scratch copy of that corpus, so the committed seeds
# stay small. Exits non-zero on any crash, leak, timeout or sanitizer
# report; the failing input is kept in BUILD_DIR/fuzz-artifacts/.
set -euo pipefail

build=${1:?usage: ci/fuzz-replay.sh BUILD_DIR [SECONDS]}
secs=${2:-20}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
status=0

for name in jws jwks policy audit form config verify; do
	bin="$build/fuzz/fuzz_$name"
	corpus="$root/fuzz/corpus/$name"
	if [ ! -x "$bin" ]; then
		echo "fuzz-replay: $bin not built (cmake --build $build --target fuzz_$name)" >&2
		exit 2
	fi
	echo "== fuzz_$name: replaying $(ls "$corpus" | wc -l) seeds"
	if ! "$bin" -runs=0 -timeout=10 -artifact_prefix="$artifacts/fuzz_$name-" "$corpus"; then
		echo "fuzz-replay: fuzz_$name crashed on a seed in $corpus" >&2
		status=1
		continue
	fi
	work=$(mktemp -d "${TMPDIR:-/tmp}/writ-fuzz-$name.XXXXXX")
	cp "$corpus"/* "$work"/
	echo "== fuzz_$name: fuzzing for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=20000 \
		-print_final_stats=1 -artifact_prefix="$artifacts/fuzz_$name-" "$work"; then
		echo "fuzz-replay: fuzz_$name failed; reproducer in $artifacts/" >&2
		status=1
	fi
	rm -rf "$work"
done
exit $status
