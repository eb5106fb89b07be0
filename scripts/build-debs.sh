#!/usr/bin/env bash
# Builds the Debian packages into target/debian/ (under CARGO_TARGET_DIR if set):
#   libpam-smsotp_VERSION-REV_amd64.deb   pam_smsotp.so, smsotp, /etc/smsotp/smsotp.toml,
#                                         the pam-auth-update profile, man pages
#   smsotp-radiusd_VERSION-REV_amd64.deb  the RADIUS server, its systemd unit, man page
# VERSION is the workspace version in Cargo.toml; REV is the revision of the
# top entry of packaging/debian/changelog (which must name that version).
#
# Usage: scripts/build-debs.sh [--no-build] [--lintian]
#   --no-build  package the release artifacts already in target/release
#   --lintian   also run lintian on both packages (fails on an error or on a
#               warning that is neither fixed nor overridden)
#
# Needs nothing from the network but crates.io (cargo-deb, pinned, is
# installed if missing) and Debian's archive (build dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
build=1
lint=0
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --lintian) lint=1 ;;
    *) echo "usage: $0 [--no-build] [--lintian]" >&2; exit 2 ;;
  esac
done

# The asset paths in the [package.metadata.deb] tables name the amd64
# multiarch directory (beside pam_unix.so).
arch=$(dpkg --print-architecture)
if [ "$arch" != amd64 ]; then
  echo "build-debs: the packaging is written for amd64 (lib/x86_64-linux-gnu/security); this is $arch" >&2
  exit 1
fi
if [ ! -f cli/Cargo.toml ]; then
  echo "build-debs: cli/ (the smsotp admin tool, shipped in libpam-smsotp) is missing" >&2
  exit 1
fi

scripts/deps.sh build
if [ "$lint" = 1 ] && ! command -v lintian >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "build-debs: installing cargo-deb $CARGO_DEB_VERSION (a few minutes, once)" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# One version, from Cargo: the changelog's top entry must agree with it.
meta=$(cargo metadata --format-version 1 --no-deps --locked)
version=$(python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pam_smsotp"))' <<<"$meta")
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$meta")
top=$(sed -n '1s/^smsotp (\(.*\)) .*/\1/p' packaging/debian/changelog)
revision=${top##*-}
if [ "${top%-*}" != "$version" ]; then
  echo "build-debs: Cargo.toml says $version but packaging/debian/changelog starts with $top;" >&2
  echo "  add a changelog entry for $version-1 (dch -v $version-1, or by hand)" >&2
  exit 1
fi

if [ "$build" = 1 ]; then
  cargo build --release --locked -p pam_smsotp -p smsotp -p smsotp-radiusd
fi

out=$target_dir/debian
mkdir -p "$out"
rm -f "$out"/libpam-smsotp_*.deb "$out"/smsotp-radiusd_*.deb
# The package that names pam_smsotp's crate also ships cli's binary, so
# cargo-deb must not try to build (it would build pam_smsotp alone).
cargo deb --no-build --locked --deb-revision "$revision" -p pam_smsotp -o "$out"
cargo deb --no-build --locked --deb-revision "$revision" -p smsotp-radiusd -o "$out"

# Two things cargo-deb leaves out, added with dpkg-deb itself: the
# substitution of ${binary:Version} (smsotp-radiusd needs libpam-smsotp of
# the very same build: it shares its config and state) and DEBIAN/md5sums
# (what debsums and dpkg --verify check), conffiles excluded as dh_md5sums does.
finish_deb() {
  local deb=$1 tmp
  tmp=$(mktemp -d)
  dpkg-deb -R "$deb" "$tmp/root"
  sed -i "s/\${binary:Version}/$version-$revision/g" "$tmp/root/DEBIAN/control"
  (
    cd "$tmp/root"
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
      { if [ -f DEBIAN/conffiles ]; then grep -vxF -f <(sed 's,^/,,' DEBIAN/conffiles); else cat; fi; } |
      tr '\n' '\0' | xargs -0r md5sum
  ) > "$tmp/md5sums"
  install -m 0644 "$tmp/md5sums" "$tmp/root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zxz -b "$tmp/root" "$deb" >/dev/null
  rm -rf "$tmp"
}
for deb in "$out"/libpam-smsotp_"$version-$revision"_*.deb "$out"/smsotp-radiusd_"$version-$revision"_*.deb; do
  finish_deb "$deb"
done
ls -l "$out"/*.deb

if [ "$lint" = 1 ]; then
  # --fail-on error,warning: an unexplained warning fails the build like an error.
  lintian --fail-on error,warning --display-info --profile debian "$out"/libpam-smsotp_*.deb "$out"/smsotp-radiusd_*.deb
fi
