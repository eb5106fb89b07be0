#!/usr/bin/env bash
# Runs every test: installs what the tests need, builds the workspace (the
# end-to-end tests load the built pam_smsotp.so), then the unit tests and the
# end-to-end tests against pamtester/pam_wrapper and a real sshd.
# Must run as root (or with sudo available): the sshd test writes its own
# /etc/pam.d/smsotp-test-sshd-* file (removed afterwards) and a test user.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo build --workspace --locked
# The debs_* tests install the .deb files, built below; they run last.
cargo test --workspace --locked -- --skip debs_

# The Debian packages (tests/tests/debian.rs): release build, the two .deb
# files with lintian (fails on an error or an unexplained warning), then
# install, log in, RADIUS challenge, remove and purge on this machine.
cargo build --release --locked -p pam_smsotp -p smsotp -p smsotp-radiusd
scripts/build-debs.sh --no-build --lintian
cargo test --locked -p smsotp-e2e --test debian
