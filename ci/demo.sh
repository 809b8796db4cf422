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
if ! "$WRIT" key list --json | grep -q '"kid"'; then
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

# ---- The target service: orders-db enforces the token itself -------------
# examples/orders-service stands in for the database gateway. It verifies
# the token offline against the issuer's JWKS (fetched once, cached per its
# Cache-Control), and enforces the token's scope and its lim {"rps": 5}.
# Block owned by the demo-service part of issue 5; append-only.
ORDERS=http://127.0.0.1:8081
cmake --build build -j"$(nproc)" --target orders-service >/dev/null
if [ -f "$D/orders.pid" ] && kill -0 "$(cat "$D/orders.pid")" 2>/dev/null; then
  kill "$(cat "$D/orders.pid")"; sleep 1
fi

say "orders-service --issuer $ISSUER --audience orders-db --listen 127.0.0.1:8081 &"
"$ROOT/build/examples/orders-service" --issuer "$ISSUER" --audience orders-db \
  --jwks-url "$ISSUER/.well-known/jwks.json" --listen 127.0.0.1:8081 \
  >"$D/orders.out" 2>"$D/orders.log" &
echo $! >"$D/orders.pid"
for _ in $(seq 50); do
  grep -q listening "$D/orders.out" 2>/dev/null && break
  kill -0 "$(cat "$D/orders.pid")" 2>/dev/null || { cat "$D/orders.log" >&2; exit 1; }
  sleep 0.1
done
cat "$D/orders.out"

# One call to orders-db: print the status, the RFC 6750 / rate-limit
# headers and the body; leave the status in $CODE.
orders() {
  CODE=$(curl -sS -o "$D/orders.body" -D "$D/orders.hdr" -w '%{http_code}' "$@" "$ORDERS/orders")
  echo "HTTP $CODE"
  grep -iE '^(www-authenticate|retry-after):' "$D/orders.hdr" || true
  cat "$D/orders.body"; echo
}
expect() { [ "$CODE" = "$1" ] || { echo "unexpected: HTTP $CODE, wanted $1" >&2; exit 1; }; }

say "curl $ORDERS/orders                                   # no token"
orders; expect 401

say "curl -H \"Authorization: Bearer \$TOKEN\" $ORDERS/orders          # read: allowed"
orders -H "Authorization: Bearer $TOKEN"; expect 200

say "curl -X POST -H \"Authorization: Bearer \$TOKEN\" -d '{...}' $ORDERS/orders   # write: the db:read token is refused by orders-db itself"
orders -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"customer":"acme","total":"10.00"}'; expect 403

say "for i in \$(seq 7); do curl -H \"Authorization: Bearer \$TOKEN\" $ORDERS/orders; done   # lim {\"rps\": 5}"
codes=""; ra=""
for _ in $(seq 7); do
  c=$(curl -sS -o /dev/null -D "$D/orders.hdr" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$ORDERS/orders")
  codes="$codes $c"
  if [ "$c" = 429 ]; then ra=$(grep -i '^retry-after:' "$D/orders.hdr" | tr -d '\r'); fi
done
echo "HTTP$codes"
case "$codes" in *429*) echo "$ra" ;; *) echo "unexpected: no request was rate limited" >&2; exit 1 ;; esac
sleep 1
orders -H "Authorization: Bearer $TOKEN"; expect 200
echo "(a second later the bucket has refilled)"

JTI=$(python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["jti"])' "$TOKEN")
say "grep $JTI writ-data/orders.log | tail -n 3      # the service's decisions, joined with the audit by jti"
grep "$JTI" "$D/orders.log" | tail -n 3
echo "$(grep -c "$JTI" "$D/audit.log" || true) issuer audit record(s) carry the same jti (writ audit query writ-data/audit.log)"

echo
echo "orders-service is still running (pid $(cat "$D/orders.pid")) on $ORDERS; its decision log is writ-data/orders.log."
echo "Stop it with:  kill \$(cat writ-data/orders.pid)"
