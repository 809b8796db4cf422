#!/usr/bin/env bash
# Install every Debian 12 package writ's build, tests, fuzzing and benchmarks
# need. Idempotent; run as root (CI) or with sudo.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev clang-format
  libssl-dev libjansson-dev libsqlite3-dev libmicrohttpd-dev libjwt-dev
  libp11-dev libp11-kit-dev libcurl4-openssl-dev
  softhsm2 opensc
  python3 python3-jwt python3-jwcrypto
  valgrind
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
