#!/usr/bin/env bash
# The README's run command: install dependencies, build, create a
# development SoftHSM2 token with an ES256 key in ./writ-data, mint a token
# signed inside the HSM, and verify it offline against the published JWKS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash ci/deps.sh >/dev/null
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
WRIT="$ROOT/build/writ"
export WRIT_HOME="$ROOT/writ-data"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

if [ ! -f "$WRIT_HOME/writ.conf" ]; then
  say "writ token init"
  "$WRIT" token init
fi
if [ -z "$("$WRIT" key list)" ]; then
  say "writ key generate --alg ES256"
  "$WRIT" key generate --alg ES256
fi
say "writ key list"
"$WRIT" key list
say "writ jwks > writ-data/jwks.json"
"$WRIT" jwks | tee "$WRIT_HOME/jwks.json"
say "writ mint --sub demo-agent --aud orders-db --scope 'db:read' --ttl 300"
TOKEN=$("$WRIT" mint --sub demo-agent --aud orders-db --scope 'db:read' --ttl 300)
echo "$TOKEN"
say "echo \$TOKEN | writ verify --jwks writ-data/jwks.json --iss http://127.0.0.1:8080 --aud orders-db"
echo "$TOKEN" | "$WRIT" verify --jwks "$WRIT_HOME/jwks.json" --iss http://127.0.0.1:8080 --aud orders-db
say "echo \$TOKEN | writ verify --jwks writ-data/jwks.json --aud billing-api   # wrong audience"
if echo "$TOKEN" | "$WRIT" verify --jwks "$WRIT_HOME/jwks.json" --aud billing-api; then
  echo "unexpected: a token for orders-db verified for billing-api" >&2
  exit 1
fi
echo
echo "The private key never left the token: writ-data/tokens/ is SoftHSM2's store,"
echo "user PIN in writ-data/user.pin (0600). Remove writ-data/ to start over."
