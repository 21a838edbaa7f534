#!/usr/bin/env bash
# Prove that the tests need nothing installed by hand: bootstrap a fresh Debian root (minbase plus what
# every machine of this kind has: python3 with venv and pip, ca-certificates), give it this machine's
# apt configuration and CA bundle, copy the project's files into it, run `./run setup` there as root,
# then run `python -m tests.tooling` there: every command and file the tests need, and where it is.
#
#   sudo scripts/check-fresh-setup.sh            # about 10 minutes, mostly downloads
#
# Settings (environment): MIRROR (default: the archive apt already uses), SUITE, KEEP=1 keeps the root.
# Exit 0 when nothing is missing. The data in ../shared/ is not the set-up's to provide (CI fetches it).
set -euo pipefail

SUITE="${SUITE:-bookworm}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { printf 'check-fresh-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
MIRROR="${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

fresh="$(mktemp -d /var/tmp/fresh-root.XXXXXX)"
# The root directory of a machine: every user may traverse it (mktemp made it private).
chmod 0755 "$fresh"
cleanup() {
  for mount in dev proc sys; do
    if mountpoint -q "$fresh/$mount"; then umount -R -l "$fresh/$mount"; fi
  done
  [[ "${KEEP:-0}" == 1 ]] && { log "kept $fresh"; return; }
  rm -rf --one-file-system "$fresh"
}
trap cleanup EXIT

started=$SECONDS
log "debootstrap $SUITE minbase into $fresh from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$fresh" "$MIRROR" >/dev/null
log "bootstrapped in $((SECONDS - started)) s"

# This machine's apt sources and settings, its DNS and its CA bundle (PyPI and Debian go through its proxy).
rm -f "$fresh/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$fresh/etc/apt/sources.list.d/"
cp -a /etc/apt/apt.conf.d/. "$fresh/etc/apt/apt.conf.d/"
cp /etc/resolv.conf "$fresh/etc/resolv.conf"
cp "$CA_BUNDLE" "$fresh/usr/local/share/ca-certificates/machine-ca.crt"
chroot "$fresh" update-ca-certificates >/dev/null
# Packages' maintainer scripts must not start services (PostgreSQL's cluster) inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$fresh/usr/sbin/policy-rc.d"
chmod 0755 "$fresh/usr/sbin/policy-rc.d"
mount -t proc proc "$fresh/proc"
mount -t sysfs sys "$fresh/sys"
# With its sub-mounts: PostgreSQL needs /dev/shm.
mount --rbind /dev "$fresh/dev"

# The project as a fresh clone has it: tracked and new files, nothing ignored (no .venv, no .tools).
mkdir -p "$fresh/work/project"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | (cd "$ROOT" && tar --null --no-recursion -T - -cf -) | tar -C "$fresh/work/project" -xf -

in_root() {
  chroot "$fresh" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE="$CA_BUNDLE" PIP_CERT="$CA_BUNDLE" REQUESTS_CA_BUNDLE="$CA_BUNDLE" \
    bash -c "cd /work/project && $1"
}

log "./run setup in the fresh root"
setup_started=$SECONDS
in_root "./run setup"
log "./run setup took $((SECONDS - setup_started)) s"

log "what the tests need (python -m tests.tooling), in the fresh root"
in_root "PATH=/work/project/.tools/bin:/work/project/.venv/bin:\$PATH .venv/bin/python -m tests.tooling"

# The same from dpkg's side, and a real PostgreSQL server started the way the tests start it.
log "tests/unit/test_setup.py and the PostgreSQL server fixture, in the fresh root"
in_root "CI=true PATH=/work/project/.tools/bin:/work/project/.venv/bin:\$PATH .venv/bin/python -m pytest \
  -q -p no:cacheprovider -o addopts= tests/unit/test_setup.py tests/integration/postgres/test_server.py"
