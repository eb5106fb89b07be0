#!/bin/sh
# Times logins through pamtester under libpam-wrapper for pam_permit,
# pam_oath and pam_smsotp (release build) and prints ms per login, the
# overhead over pam_permit and the ratios. Arguments go to bench_pam
# (--logins N, --warmup N, --user NAME, --module PATH).
#
#   scripts/bench-pam.sh --logins 200
#
# Installs the Debian packages it needs when they are missing (needs root
# for that; the benchmark itself touches no system file).
set -eu

cd "$(dirname "$0")/.."

packages="pamtester libpam-wrapper libpam-oath oathtool"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bench-pam: installing$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

# Two builds: a --bin filter would skip the cdylib.
cargo build --release -p pam_smsotp
cargo build --release -p smsotp-e2e --bin bench_pam
exec "${CARGO_TARGET_DIR:-target}/release/bench_pam" "$@"
