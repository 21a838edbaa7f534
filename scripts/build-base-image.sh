#!/usr/bin/env bash
# Build the local Debian base images used when no container registry is reachable
# (recipe: ../shared/ENVIRONMENT.md). Users with registry access do not need this:
# the image builds default to the public python:3.11-slim.
#
#   localhost/debian-python:bookworm     debootstrap minbase + python3, venv, pip, CA certificates
#   localhost/debian-python-uv:bookworm  the above + this machine's CA bundle trusted, uv, UV_NATIVE_TLS=1
#
# Idempotent: an image that already exists and was built by this very recipe (label
# io.tabula.base-recipe, the digest of this script) is kept; FORCE=1 rebuilds both.
# Settings (environment): MIRROR (default: the archive apt already uses), SUITE, BASE_IMAGE, UV_IMAGE,
# CA_BUNDLE (the CA bundle to trust inside builds), UV_VERSION, FORCE.
set -euo pipefail

SUITE="${SUITE:-bookworm}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:${SUITE}}"
UV_IMAGE="${UV_IMAGE:-localhost/debian-python-uv:${SUITE}}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
UV_VERSION="${UV_VERSION:-0.13.9}"
FORCE="${FORCE:-0}"

log() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap and rootful podman need it)"
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y podman buildah runc debootstrap"
done

bash "$(dirname "${BASH_SOURCE[0]}")/configure-podman.sh"

# One build at a time (parallel test workers may all ask for the images): the others wait, then keep them.
exec 9>"${LOCK_FILE:-/run/lock/tabula-base-image.lock}"
flock 9

RECIPE="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
RECIPE_LABEL=io.tabula.base-recipe
image_exists() {
    [[ "$FORCE" != 1 ]] && podman image exists "$1" \
        && [[ "$(podman image inspect --format "{{ index .Labels \"$RECIPE_LABEL\" }}" "$1")" == "$RECIPE" ]]
}

if image_exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists, keeping it"
else
    MIRROR="${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    rootfs="$(mktemp -d /var/tmp/debian-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $SUITE from $MIRROR (1-2 minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >/dev/null
    # Package caches and lists, documentation, manuals and message translations only add size to
    # the images (about 50 MB); dpkg leaves them out of packages installed later, too. The copyright
    # files stay.
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/90-tabula-slim" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
DPKG
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $RECIPE_LABEL=$RECIPE" \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "built $BASE_IMAGE"
    # The uv image is built on the base: a new base makes it out of date.
    FORCE=1
fi

if image_exists "$UV_IMAGE"; then
    log "$UV_IMAGE exists, keeping it"
else
    [[ -r "$CA_BUNDLE" ]] || die "CA bundle $CA_BUNDLE is not readable"
    context="$(mktemp -d)"
    trap 'rm -rf "$context"' EXIT
    cp "$CA_BUNDLE" "$context/machine-ca.crt"
    # Debian's pip refuses system-wide installs (PEP 668) unless told otherwise; uv is a static binary,
    # so that install cannot break the system Python.
    cat > "$context/Containerfile" <<EOF
FROM $BASE_IMAGE
COPY machine-ca.crt /usr/local/share/ca-certificates/machine-ca.crt
RUN update-ca-certificates >/dev/null \\
 && PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    pip install --root-user-action=ignore "uv==$UV_VERSION"
ENV UV_NATIVE_TLS=1 \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
LABEL $RECIPE_LABEL=$RECIPE
EOF
    log "building $UV_IMAGE"
    buildah build --quiet --network host --layers=false -t "$UV_IMAGE" "$context" >/dev/null
    rm -rf "$context"
    trap - EXIT
    log "built $UV_IMAGE"
fi

podman image inspect --format '{{.RepoTags}} {{.Size}}' "$BASE_IMAGE" "$UV_IMAGE"
