#!/usr/bin/env bash
# Makes the Debian packages tether-scheduler (with tetherctl) and tether-sidecar with cargo-deb, from
# binaries already built with PROFILE (cargo-deb never builds here: --no-build), into target/debian/.
#
#   Real packages:  cargo build --release -p tether-scheduler -p tetherctl -p tether-sidecar -p tether-assets
#                   deploy/debian/build.sh release --maintainer "Your Team <ops@example.com>"
#   CI's check:     deploy/debian/build.sh dev --fast   (the debug binaries the tests use; see check-packages.sh)
#
# Extra arguments go to every `cargo deb` (e.g. --fast, --maintainer "Name <mail>", --deb-revision 2).
# The packaging files are in deploy/debian/ and the [package.metadata.deb] sections of scheduler/Cargo.toml
# and agent-sidecar/Cargo.toml; man pages and completions are generated here by tether-assets.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=${1:-release}
shift || true
case "$profile" in
  dev) dir=target/debug ;;
  *) dir=target/$profile ;;
esac
for bin in tether-scheduler tetherctl tether-sidecar tether-assets; do
  if [ ! -x "$dir/$bin" ]; then
    echo "deploy/debian/build.sh: $dir/$bin is missing: cargo build --profile $profile -p $bin" >&2
    exit 1
  fi
done
# Pinned: the package layout is checked against this version's behaviour.
if ! cargo deb --version 2>/dev/null | grep -q '^3\.8\.'; then
  cargo install --locked cargo-deb --version 3.8.0
fi

# Man pages and completions, where the [package.metadata.deb] assets expect them (cargo-deb replaces
# their target/release/ prefix with $dir). Debian wants man pages gzipped without a timestamp.
rm -rf "$dir/package-assets"
"$dir/tether-assets" assets "$dir/package-assets" >/dev/null
gzip -9n "$dir"/package-assets/man/*.1

mkdir -p target/debian
for package in tether-scheduler tether-sidecar; do
  cargo deb --no-build --profile "$profile" -p "$package" -o target/debian "$@"
done
