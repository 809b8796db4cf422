#!/usr/bin/env bash
# The issuer benchmark (issue 3): POST /token throughput and latency with
# the audit log durable, against the crypto limit measured in the same run.
#   bench/issuer.sh BUILD_DIR
#   WRIT_BENCH_SECONDS   seconds per load phase (default 10)
#   WRIT_BENCH_MILLION   tokens to issue before re-measuring (default 1000000; 0 skips)
#   WRIT_BENCH_CONNS     concurrent keep-alive connections (default 64)
#   WRIT_BENCH_ROUNDS    rounds of each measurement; medians reported (default 3)
set -euo pipefail
B=${1:?usage: bench/issuer.sh BUILD_DIR}
B=$(cd "$B" && pwd)
SECS=${WRIT_BENCH_SECONDS:-10}
MILLION=${WRIT_BENCH_MILLION:-1000000}
# 64, not 32: at max rate every connection can be waiting on the same
# audit fdatasync, and with 32 the two cores sat 6-24% idle or in I/O wait
# through such stalls (the max-rate line prints that share): the phase
# measured the client's concurrency, not the issuer. With 64 it is 2-4%.
CONNS=${WRIT_BENCH_CONNS:-64}
ROUNDS=${WRIT_BENCH_ROUNDS:-3}
BI="$B/bench/bench_issuer"
TOP=$(mktemp -d /tmp/writ-bench-issuer-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TOP"; }
trap cleanup EXIT

# start_issuer DIR: a fresh token, signing key, policy and agent in DIR and
# a writ-issuer serving them on a free port; sets D, PORT, ISS and PID,
# the issuer the functions below measure (use switches between them).
start_issuer() {
  D=$1
  mkdir -p "$D"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ISS="http://127.0.0.1:$PORT"
  "$B/writ" token init --dir "$D" --issuer "$ISS" >/dev/null
  cat >>"$D/writ.conf" <<CONF
listen = 127.0.0.1:$PORT
max_connections = 256
CONF
  "$B/writ" -c "$D/writ.conf" key generate --alg ES256 >/dev/null
  cat >"$D/policy.json" <<'JSON'
{"version": 1, "rules": [{"id": "bench", "effect": "allow", "subjects": ["bench-*"],
  "audiences": ["bench-db"], "actions": ["read"], "ttl": 300}]}
JSON
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/agent.key" 2>/dev/null
  openssl pkey -in "$D/agent.key" -pubout -out "$D/agent.pub"
  "$B/writ" -c "$D/writ.conf" agent add bench-1 --key "$D/agent.pub" >/dev/null
  "$B/writ-issuer" -c "$D/writ.conf" >"$D/issuer.out" 2>"$D/issuer.err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do curl -fsS "$ISS/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}
use() { D=$1 PORT=$2 ISS=$3 PID=$4; }
start_issuer "$TOP/main"
MAIN=("$D" "$PORT" "$ISS" "$PID")

field() { sed -n "s/\(^\|.* \)$1 \([0-9.]*\).*/\2/p"; }
# Fresh unique assertions for each phase: each is accepted once, and they
# live 60 s (writ assert's default; SPEC s.5 allows up to 300), so they are
# made just before use, in chunks that are used up well within that.
# The file (tens of MB) is synced before the load starts: left dirty, its
# writeback would land mid-phase on the disk the audit log fdatasyncs to,
# and the phase would measure the benchmark's own setup.
gen() { "$BI" gen "$1" bench-1 "$D/agent.key" "$ISS" >"$D/assertions" && sync "$D/assertions"; }
# The whole machine's idle + I/O-wait ticks and all ticks: a max-rate
# phase with cores to spare did not measure the issuer's limit.
# And the ticks the hypervisor gave to other guests (steal): on a shared
# host a vCPU taken away for milliseconds lands in the latency tail.
idle() { awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9}' /proc/stat; }
steal() { echo "$I0 $I1" | awk '{printf "%.1f", 100 * ($6 - $3) / ($5 - $2)}'; }
phase() { # phase NAME RATE: load with fresh assertions; sets R
  gen "$(python3 -c "print(int(max(20000, 12000 * $SECS) if float('$2') == 0 else float('$2') * $SECS + 1000))")"
  I0=$(idle)
  R=$("$BI" load "127.0.0.1:$PORT" "$D/assertions" "$CONNS" "$SECS" "$2")
  I1=$(idle)
  echo "  $1: $R"
}

med() { python3 -c 'import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
# The issuer's CPU time (all threads, user + system) per token over a
# phase: what the machine's noise moves least.
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

echo "# writ-issuer POST /token, $CONNS connections, audit fdatasync'd per token (group commit)"
echo "# $ROUNDS rounds of (crypto limit, max rate), then $ROUNDS half-rate phases; medians reported"
RATIOS=(); MAXES=(); ICPUS=(); LCPUS=(); P99S=(); IDLES=(); SENTS=(); LATES=(); STEALS=()
# A warm-up at max rate, not counted: a fresh issuer's first seconds (its
# heap, the replay cache's first resizes, a new audit file's first
# extents) are not its steady state, and the first round read 15-18%
# idle or I/O wait when the later ones read 3-4%.
W=$SECS; SECS=3; phase "warm-up (not counted)" 0; SECS=$W
echo "  warm-up: machine idle or in I/O wait during it: $(echo "$I0 $I1" | awk '{printf "%.1f", 100 * ($4 - $1) / ($5 - $2)}')%"
# One round: the crypto limit, the issuer at max rate, the limit again;
# sets MAX, LIMIT, LCPU, ICPU, IDLE and appends the round's ratio to the
# array named by $2. Each round's ratio is against the mean of the limits
# measured just before and just after it, so the host's drift lands on
# both sides alike: the limit, two threads of pure CPU, moved by up to
# 18% between rounds a minute apart while the issuer's rate moved 5%.
limit() { "$BI" limit "$D/writ.conf" "$D/agent.pub" "$D/assertions" 4; }
max_round() { # max_round LABEL RATIO_ARRAY
  gen 1
  L=$(limit)
  C0=$(cpu)
  phase "$1: max rate" 0; MAX=$(echo "$R" | field rate)
  C1=$(cpu)
  L2=$(limit)
  LIMIT=$(python3 -c "print(round(($(echo "$L" | field limit) + $(echo "$L2" | field limit)) / 2))")
  LCPU=$(python3 -c "print(round(($(echo "$L" | field cpu_us_per_op) + $(echo "$L2" | field cpu_us_per_op)) / 2, 1))")
  echo "  $1: crypto limit (2 threads: ES256 assertion verify + C_Sign), before and after: $(echo "$L" | field limit) and $(echo "$L2" | field limit) /s, mean $LIMIT /s, $LCPU us CPU each"
  IDLE=$(echo "$I0 $I1" | awk '{printf "%.1f", 100 * ($4 - $1) / ($5 - $2)}')
  echo "  $1: machine idle or in I/O wait during it: $IDLE%; stolen by the host: $(steal)%"
  ICPU=$(python3 -c "print(f'{1e6 * ($C1 - $C0) / $(getconf CLK_TCK) / $(echo "$R" | field ok):.1f}')")
  echo "  $1: issuer CPU per token $ICPU us; tokens/s / limit $(python3 -c "print(f'{$MAX / $LIMIT:.3f}')")"
  eval "$2+=(\"$(python3 -c "print($MAX / $LIMIT)")\")"
}
for r in $(seq "$ROUNDS"); do
  max_round "round $r" RATIOS
  MAXES+=("$MAX"); ICPUS+=("$ICPU"); LCPUS+=("$LCPU"); IDLES+=("$IDLE")
done
MAX=$(med "${MAXES[@]}"); FRESH=$MAX
hist() { curl -fsS "$ISS/metrics" | sed -n 's/^writ_\(token_request\|audit_fsync\)_duration_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1:\2 \3/p'; }
hist >"$D/hist.before"
for r in $(seq "$ROUNDS"); do
  phase "half rate ($r/$ROUNDS)" "$(python3 -c "print(int($MAX/2))")"
  STEALS+=("$(steal)"); echo "  half rate ($r/$ROUNDS): stolen by the host: $(steal)%"
  P99S+=("$(echo "$R" | field p99_ms)"); SENTS+=("$(echo "$R" | field from_send_p99_ms)")
  LATES+=("$(echo "$R" | field client_late_p99_ms)")
done
hist >"$D/hist.after"
# The issuer's own view of the half-rate phases (its /metrics histograms):
# what share of requests (read to durable audit line) finished in
# 5 ms, and how long the audit log's fdatasyncs took, the disk's share of
# that under the same load.
python3 - "$D/hist.before" "$D/hist.after" <<'PY'
import sys
b, a = (dict(l.split() for l in open(f)) for f in sys.argv[1:])
d = {k: int(a[k]) - int(b.get(k, 0)) for k in a}
def share(h, le):
    return 100 * d[f"{h}:{le}"] / max(d[f"{h}:+Inf"], 1)
print(f"  half rate, issuer-side (/metrics): {share('token_request', '0.005'):.2f}% within 5 ms, "
      f"{share('token_request', '0.01'):.2f}% within 10 ms")
print(f"  half rate, audit fdatasync (/metrics, {d['audit_fsync:+Inf']} syncs): "
      f"{share('audit_fsync', '0.001'):.2f}% within 1 ms, {share('audit_fsync', '0.0025'):.2f}% "
      f"within 2.5 ms, {share('audit_fsync', '0.005'):.2f}% within 5 ms")
PY
JW=$("$BI" jwks "127.0.0.1:$PORT" 8 "$SECS" | field rate)
echo "  JWKS GET: $JW req/s"
# The floor under every token's latency: the disk's own fdatasync, on the
# audit log's file system, alone (the issuer is idle now).
FS=$("$BI" fsync "$D" 2000)
echo "  disk floor, one line + fdatasync in the audit log's directory: $FS"
echo "  median issuer CPU per token: $(med "${ICPUS[@]}") us; median limit CPU per operation: $(med "${LCPUS[@]}") us"
echo "  median machine idle or in I/O wait at max rate: $(med "${IDLES[@]}")% (rounds: ${IDLES[*]})"
echo "  median ratio tokens/s / limit: $(python3 -c "print(f'{$(med "${RATIOS[@]}"):.3f}')") (target >= 0.6; rounds: $(printf '%.3f ' "${RATIOS[@]}"))"
echo "  median p99 at half rate: $(med "${P99S[@]}") ms (target <= 5; phases: ${P99S[*]})"
# Counted from each request's intended send time: how much of it was the
# client itself sending late, and the p99 from the actual send.
echo "    of which the client sending late, p99: $(med "${LATES[@]}") ms; p99 from the actual send: $(med "${SENTS[@]}") ms; stolen by the host: ${STEALS[*]} %"
if [ "$MILLION" -gt 0 ]; then
  echo "# issuing $MILLION tokens in chunks of 50000, then measuring again beside a fresh issuer"
  left=$MILLION
  while [ "$left" -gt 0 ]; do
    n=$(( left < 50000 ? left : 50000 ))
    gen "$n"
    "$BI" load "127.0.0.1:$PORT" "$D/assertions" "$CONNS" 100000 >/dev/null || true
    left=$(( left - n ))
  done
  # The comparison that judges "nothing grows with history": this issuer
  # against a fresh one (same binary and settings, its own token, store
  # and audit log), their max-rate rounds alternating, so the host's
  # drift over the minutes this takes lands on both alike. Measured
  # against the first rounds instead, it read 0.923 and 0.931 in runs
  # where the crypto limit itself had slowed by as much (the ratio to it
  # 0.945 and 0.987).
  start_issuer "$TOP/fresh"
  FRESH_ISSUER=("$D" "$PORT" "$ISS" "$PID")
  W=$SECS; SECS=3; phase "fresh issuer: warm-up (not counted)" 0; SECS=$W
  AFTER=(); FRESH2=(); ACPUS=(); FCPUS=()
  after_round() { # after_round WHO LABEL
    if [ "$1" = fresh ]; then use "${FRESH_ISSUER[@]}"; else use "${MAIN[@]}"; fi
    C0=$(cpu)
    phase "$2: max rate" 0
    C1=$(cpu)
    ICPU=$(python3 -c "print(f'{1e6 * ($C1 - $C0) / $(getconf CLK_TCK) / $(echo "$R" | field ok):.1f}')")
    echo "  $2: issuer CPU per token $ICPU us; idle or in I/O wait $(echo "$I0 $I1" | awk '{printf "%.1f", 100 * ($4 - $1) / ($5 - $2)}')%; stolen by the host: $(steal)%"
    if [ "$1" = fresh ]; then FRESH2+=("$(echo "$R" | field rate)"); FCPUS+=("$ICPU")
    else AFTER+=("$(echo "$R" | field rate)"); ACPUS+=("$ICPU"); fi
  }
  for r in $(seq "$ROUNDS"); do
    # Which goes first alternates too.
    if [ $((r % 2)) -eq 1 ]; then order="fresh after"; else order="after fresh"; fi
    for who in $order; do
      if [ "$who" = fresh ]; then after_round fresh "fresh issuer ($r/$ROUNDS)"
      else after_round after "after $MILLION ($r/$ROUNDS)"; fi
    done
  done
  python3 -c "print(f'  median after {$MILLION} / median fresh issuer, alternating rounds: tokens/s {$(med "${AFTER[@]}")/$(med "${FRESH2[@]}"):.3f} (target >= 0.95); CPU per token, fresh / after: {$(med "${FCPUS[@]}")/$(med "${ACPUS[@]}"):.3f}')"
  python3 -c "print(f'    (after / the first rounds of this run, minutes apart: tokens/s {$(med "${AFTER[@]}")/$FRESH:.3f}; CPU per token {$(med "${ICPUS[@]}")/$(med "${ACPUS[@]}"):.3f})')"
fi
