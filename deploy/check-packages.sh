#!/usr/bin/env bash
# CI: packages the debug binaries the test command builds (no second build; see deploy/debian/build.sh)
# and checks the packages: control fields, conffiles, maintainer scripts, every file in place, and the
# systemd units with `systemd-analyze verify` (Debian's systemd; skipped loudly where it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

rm -f target/debian/tether-scheduler_*.deb target/debian/tether-sidecar_*.deb
deploy/debian/build.sh dev --fast --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-packages: $*" >&2; exit 1; }

# check PACKAGE DEPENDS FILE...: the control fields, the conffile, the maintainer scripts, the files.
check() {
  local package=$1 depends=$2
  shift 2
  local deb
  deb=$(ls target/debian/"$package"_*.deb)
  echo "== $deb"
  dpkg-deb -I "$deb"
  dpkg-deb -c "$deb"
  [ "$(dpkg-deb -f "$deb" Package)" = "$package" ] || fail "$deb: wrong Package"
  dpkg-deb -f "$deb" Depends | grep -q "$depends" || fail "$deb: Depends lacks $depends"
  mkdir -p "$work/$package"
  dpkg-deb -e "$deb" "$work/$package/DEBIAN"
  grep -qx "/etc/default/$package" "$work/$package/DEBIAN/conffiles" || fail "$deb: /etc/default/$package is not a conffile"
  grep -q "systemd-sysusers.* $package.conf" "$work/$package/DEBIAN/postinst" || fail "$deb: postinst creates no user"
  grep -q "deb-systemd-helper update-state $package.service" "$work/$package/DEBIAN/postinst" || fail "$deb: postinst does not register the unit"
  # Installed disabled: it cannot run before /etc/default is configured.
  if grep -q "deb-systemd-helper enable $package.service\|deb-systemd-invoke start" "$work/$package/DEBIAN/postinst"; then
    if ! grep -q "was-enabled $package.service" "$work/$package/DEBIAN/postinst"; then
      fail "$deb: postinst enables or starts the unit"
    fi
  fi
  dpkg-deb -x "$deb" "$work/root"
  local f
  for f in "$@"; do
    [ -e "$work/root/$f" ] || fail "$deb: no /$f"
  done
  [ -x "$work/root/usr/bin/$package" ] || fail "$deb: /usr/bin/$package is not executable"
  "$work/root/usr/bin/$package" --version
  gzip -t "$work"/root/usr/share/man/man1/*.gz
}

completions() { echo "usr/share/bash-completion/completions/$1 usr/share/zsh/vendor-completions/_$1 usr/share/fish/vendor_completions.d/$1.fish"; }

# shellcheck disable=SC2046 # the file lists are words on purpose
check tether-scheduler "systemd" \
  usr/bin/tetherctl etc/default/tether-scheduler \
  usr/lib/systemd/system/tether-scheduler.service usr/lib/sysusers.d/tether-scheduler.conf \
  usr/share/man/man1/tether-scheduler.1.gz usr/share/man/man1/tetherctl.1.gz \
  usr/share/man/man1/tetherctl-endpoints.1.gz usr/share/man/man1/tetherctl-completions.1.gz \
  $(completions tether-scheduler) $(completions tetherctl) \
  usr/share/doc/tether-scheduler/operations.md usr/share/doc/tether-scheduler/examples/tether-scheduler.json
# shellcheck disable=SC2046
check tether-sidecar "systemd" \
  etc/default/tether-sidecar \
  usr/lib/systemd/system/tether-sidecar.service usr/lib/sysusers.d/tether-sidecar.conf \
  usr/share/man/man1/tether-sidecar.1.gz $(completions tether-sidecar) \
  usr/share/doc/tether-sidecar/operations.md
[[ "$("$work/root/usr/bin/tetherctl" completions bash)" == *endpoints* ]] || fail "tetherctl completions bash lacks endpoints"

# The units as the packages install them. verify resolves ExecStart= and man: links on this machine, so
# it checks copies that point into the unpacked packages.
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$work/units"
  for unit in tether-scheduler tether-sidecar; do
    sed "s|^ExecStart=/usr/bin/|ExecStart=$work/root/usr/bin/|" \
      "$work/root/usr/lib/systemd/system/$unit.service" >"$work/units/$unit.service"
  done
  MANPATH="$work/root/usr/share/man" systemd-analyze verify "$work"/units/*.service
  for unit in tether-scheduler tether-sidecar; do
    systemd-analyze security --offline=true "$work/units/$unit.service" | tail -1
  done
else
  echo "!!! check-packages: SKIPPING systemd-analyze verify: no systemd-analyze (apt-get install systemd)" >&2
fi
echo "check-packages: ok"
