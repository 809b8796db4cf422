#!/usr/bin/env bash
# The README's run command. Installs dependencies, builds, and runs writ on
# its embedded defaults in ./writ-data: a development SoftHSM2 token with an
# ES256 key, a SQLite store with one demo agent, the example policy, the
# audit log, and writ-issuer on 127.0.0.1:8080. Then one agent obtains a
# read token, is refused a write, and the token is verified offline.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash ci/deps.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target writ writ-issuer >/dev/null
export WRIT_HOME="$ROOT/writ-data"
WRIT="$ROOT/build/writ"
ISSUER=http://127.0.0.1:8080
D=$WRIT_HOME

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# A previous demo's issuer is stopped first, so the demo can be re-run.
if [ -f "$D/issuer.pid" ] && kill -0 "$(cat "$D/issuer.pid")" 2>/dev/null; then
  kill "$(cat "$D/issuer.pid")"; sleep 1
fi

if [ ! -f "$D/writ.conf" ]; then
  say "writ token init                 # SoftHSM2 token, random PIN in a 0600 file"
  "$WRIT" token init --issuer "$ISSUER"
fi
if [ -z "$("$WRIT" key list)" ]; then
  say "writ key generate --alg ES256   # generated inside the token, never extractable"
  "$WRIT" key generate --alg ES256
fi
[ -f "$D/policy.json" ] || cp examples/policy.json "$D/policy.json"
say "writ policy check writ-data/policy.json"
"$WRIT" policy check "$D/policy.json"

if [ ! -f "$D/demo-agent.key" ]; then
  say "openssl genpkey ... > demo-agent.key; writ agent add demo-agent --group analysts --key demo-agent.pub"
  (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/demo-agent.key")
  openssl pkey -in "$D/demo-agent.key" -pubout -out "$D/demo-agent.pub"
  "$WRIT" agent add demo-agent --group analysts --key "$D/demo-agent.pub"
fi

say "writ-issuer &                   # listening on $ISSUER"
"$ROOT/build/writ-issuer" >"$D/issuer.out" 2>"$D/issuer.err" &
echo $! >"$D/issuer.pid"
for _ in $(seq 50); do
  curl -fsS "$ISSUER/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$ISSUER/healthz"; echo

say "writ assert --agent demo-agent --key demo-agent.key --aud $ISSUER | writ exchange --audience orders-db --scope db:read"
"$WRIT" assert --agent demo-agent --key "$D/demo-agent.key" --aud "$ISSUER" >"$D/assertion"
"$WRIT" exchange --issuer "$ISSUER" --assertion "$D/assertion" --audience orders-db --scope "db:read" \
  | tee "$D/response.json"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$D/response.json")

say "... --scope db:write             # writes are blocked by policy"
"$WRIT" assert --agent demo-agent --key "$D/demo-agent.key" --aud "$ISSUER" >"$D/assertion"
if "$WRIT" exchange --issuer "$ISSUER" --assertion "$D/assertion" --audience orders-db --scope "db:write"; then
  echo "unexpected: a write was granted" >&2; exit 1
fi

say "curl $ISSUER/.well-known/jwks.json > jwks.json; echo \$TOKEN | writ verify --jwks jwks.json --iss $ISSUER --aud orders-db"
curl -fsS "$ISSUER/.well-known/jwks.json" >"$D/jwks.json"
echo "$TOKEN" | "$WRIT" verify --jwks "$D/jwks.json" --iss "$ISSUER" --aud orders-db

say "writ audit query writ-data/audit.log --agent demo-agent"
"$WRIT" audit query "$D/audit.log" --agent demo-agent | tail -n 4

echo
echo "writ-issuer is still running (pid $(cat "$D/issuer.pid")) on $ISSUER."
echo "Stop it with:  kill \$(cat writ-data/issuer.pid)      Start over: rm -rf writ-data"
