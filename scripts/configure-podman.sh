#!/usr/bin/env bash
# Podman's engine settings this kind of machine needs (../shared/ENVIRONMENT.md): crun refuses the VM's
# hybrid cgroups and raising RLIMIT_NOFILE/NPROC is not permitted, so podman runs runc with cgroupfs and
# no default ulimits. Run as root by `./run setup`/`./run test` and scripts/build-base-image.sh.
# An existing /etc/containers/containers.conf is never overwritten. Idempotent.
set -euo pipefail

CONF="${CONTAINERS_CONF_PATH:-/etc/containers/containers.conf}"

[[ -e "$CONF" ]] && exit 0
printf 'configure-podman: writing %s (runc, cgroupfs, no default ulimits)\n' "$CONF" >&2
mkdir -p "$(dirname "$CONF")"
cat > "$CONF" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
