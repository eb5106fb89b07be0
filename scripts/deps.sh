#!/usr/bin/env bash
# Installs the Debian packages that building, the demo and the tests need.
# Usage: scripts/deps.sh [build|demo|test|bench|fuzz]   (default: test)
set -euo pipefail
what=${1:-test}
pkgs=(libpam0g-dev libclang-dev pkg-config)
case "$what" in
  build) ;;
  demo) pkgs+=(pamtester libpam-wrapper python3) ;;
  test) pkgs+=(pamtester libpam-wrapper libnss-wrapper openssh-server openssh-client python3 python3-paramiko freeradius-utils libpam-radius-auth lintian slapd ldap-utils openssl nodejs npm redis-server redis-sentinel redis-tools) ;;
  bench) pkgs+=(pamtester libpam-wrapper libpam-oath oathtool) ;;
  # libFuzzer's C++, built by the libfuzzer-sys crate (scripts/fuzz.sh).
  fuzz) pkgs+=(g++) ;;
  *) echo "usage: $0 [build|demo|test|bench|fuzz]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm may come from elsewhere than Debian (nodesource, nvm): fine.
if [ "$what" = test ] && command -v node >/dev/null && command -v npm >/dev/null; then
  keep=()
  for p in "${missing[@]}"; do case "$p" in nodejs|npm) ;; *) keep+=("$p") ;; esac; done
  missing=("${keep[@]}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The SMPP tests' SMSC: the npm smpp package, pinned by tests/node/package-lock.json.
if [ "$what" = test ] && [ ! -f "$(dirname "$0")/../tests/node/node_modules/smpp/package.json" ]; then
  echo "installing: npm smpp (tests/node)" >&2
  npm ci --prefix "$(dirname "$0")/../tests/node" --no-audit --no-fund --loglevel=error >/dev/null
fi
