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
cargo test --workspace --locked
