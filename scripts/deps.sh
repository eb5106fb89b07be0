#!/usr/bin/env bash
# Installs the Debian packages that building, the demo and the tests need.
# Usage: scripts/deps.sh [build|demo|test|bench]   (default: test)
set -euo pipefail
what=${1:-test}
pkgs=(libpam0g-dev libclang-dev pkg-config)
case "$what" in
  build) ;;
  demo) pkgs+=(pamtester libpam-wrapper python3) ;;
  test) pkgs+=(pamtester libpam-wrapper libnss-wrapper openssh-server openssh-client python3 python3-paramiko) ;;
  bench) pkgs+=(pamtester libpam-wrapper libpam-oath oathtool) ;;
  *) echo "usage: $0 [build|demo|test|bench]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
