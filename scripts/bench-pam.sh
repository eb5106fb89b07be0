#!/bin/sh
# Times logins through pamtester under libpam-wrapper for pam_permit,
# pam_oath and pam_smsotp (release build) and prints ms per login, the
# overhead over pam_permit and the ratios, then where pam_smsotp's time
# goes (each part of a login timed alone in fresh processes). Arguments go
# to bench_pam (--logins N, --warmup N, --user NAME, --module PATH).
#
#   scripts/bench-pam.sh --logins 200
#
# pam_smsotp runs with the product's audit default, lines to syslog: a
# syslog daemon must read /dev/log, as on any Debian host. When none does,
# this starts rsyslogd and stops it again at exit.
#
# Installs the Debian packages it needs when they are missing (needs root
# for that; the benchmark itself touches no system file).
set -eu

cd "$(dirname "$0")/.."

say() { echo "bench-pam: $*" >&2; }
die() { say "$*"; exit 1; }
. scripts/bench-config.sh

packages="pamtester libpam-wrapper libpam-oath oathtool"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

cleanup() {
    if [ -n "$syslog_pid" ]; then
        kill -TERM "$syslog_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_syslog

# Two builds: a --bin filter would skip the cdylib.
cargo build --release -p pam_smsotp
cargo build --release -p smsotp-e2e --bin bench_pam
"${CARGO_TARGET_DIR:-target}/release/bench_pam" "$@"
