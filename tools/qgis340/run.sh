#!/usr/bin/env bash
# `make test-qgis340`: the plugin on QGIS 3.40 LTR (Debian 13: Python 3.13, NumPy 2), as a user installs it.
#
# 1. A Debian 13 root with QGIS 3.40 is made by mmdebstrap from Debian's registry and cached in .qgis340/root
#    (git-ignored); it is rebuilt only when the package list below changes (or after `rm -rf .qgis340`).
# 2. The host's CA certificates and pip configuration are copied into it (pip cannot reach the index without
#    them on networks that need them); local folders the pip configuration names are bound read-only.
# 3. In a private mount namespace (every mount vanishes with the process, on every exit path) the checkout is
#    bound at /rsclip/repo and the shared test data at /rsclip/shared/data, and tools/qgis340/inside.sh runs in
#    the root: the plugin's release zip goes into a fresh QGIS profile, the plugin's own installer installs the
#    engine's packages into that profile, then the plugin, Processing and qgis_process tests and a desktop
#    screenshot under Xvfb run on QGIS 3.40.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=$REPO/.qgis340
ROOT=$CACHE/root
SUITE=trixie
# QGIS as Debian ships it, what runs the dock on a desktop, and pytest with pytest-qt from Debian's registry.
# pytest-qgis is not packaged by Debian: inside.sh pip-installs it into .qgis340/testtools, which only the test
# run has on its path.
# PyQt6 is for the Qt 6 check (tests/test_qt6_compat.py).
PACKAGES=python3-qgis,qgis-providers,qgis,python3-venv,python3-pip,xvfb,xauth
PACKAGES+=,python3-pytest,python3-pytestqt,python3-pytest-timeout,python3-pyqt6
STAMP="$SUITE $PACKAGES"

log() { printf '\n== %s\n' "$*" >&2; }

build_root() {
    if [ -f "$ROOT/.rsclip-root" ] && [ "$(cat "$ROOT/.rsclip-root")" = "$STAMP" ]; then
        log "Debian 13 root with QGIS 3.40 from the cache: $ROOT"
        return
    fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: run make setup" >&2; exit 2; }
    log "Building the Debian 13 root with QGIS 3.40 (mmdebstrap $SUITE)"
    rm -rf "$ROOT" "$ROOT.tmp"
    mkdir -p "$CACHE"
    local start=$SECONDS
    # In its own mount namespace too, so an interrupted build leaves no mount behind on the host.
    unshare --mount --propagation private \
        mmdebstrap --quiet --variant=apt --include="$PACKAGES" "$SUITE" "$ROOT.tmp"
    echo "$STAMP" > "$ROOT.tmp/.rsclip-root"
    mv "$ROOT.tmp" "$ROOT"
    log "Root built in $((SECONDS - start)) s, $(du -sh --one-file-system "$ROOT" | cut -f1)"
}

# Files of the host's CA and pip configuration, copied to the same paths inside the root.
copy_host_config() {
    local f files=(/etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip"
                   /etc/resolv.conf /etc/hosts)
    for var in PIP_CONFIG_FILE PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE PIP_CONSTRAINT; do
        [ -n "${!var:-}" ] && files+=("${!var}")
    done
    for f in "${files[@]}"; do
        [ -e "$f" ] || continue
        [ "$f" = "/dev/null" ] && continue
        mkdir -p "$ROOT$(dirname "$f")"
        rm -rf "${ROOT:?}$f"
        cp -rL "$f" "$ROOT$f"
    done
}

# Absolute local folders that the pip configuration refers to (find-links, file:// indexes).
pip_local_folders() {
    {
        for f in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "${PIP_CONFIG_FILE:-}"; do
            [ -f "$f" ] && grep -E '^\s*(find-links|index-url|extra-index-url|constraint)\s*=' "$f" | cut -d= -f2-
        done
        echo "${PIP_FIND_LINKS:-} ${PIP_INDEX_URL:-} ${PIP_EXTRA_INDEX_URL:-}"
    } | tr ' \t' '\n\n' | sed -n 's#^\(file://\)\?\(/[^ ]*\)$#\2#p' | while read -r path; do
        path=${path%/}
        [ "${path%/simple}" != "$path" ] && path=$(dirname "$path")  # a simple index links to ../../files
        [ -d "$path" ] && echo "$path"
    done | sort -u
}

# Runs in the private mount namespace: mount, run inside.sh in the root, and let the namespace take the mounts.
inside_namespace() {
    mount -t proc proc "$ROOT/proc"
    mount --rbind /dev "$ROOT/dev"
    mount --rbind /sys "$ROOT/sys"
    mkdir -p "$ROOT/rsclip/repo" "$ROOT/rsclip/shared/data" "$ROOT/root/.cache/pip" "$CACHE/pip-cache"
    mount --bind "$REPO" "$ROOT/rsclip/repo"
    mount --bind "$CACHE/pip-cache" "$ROOT/root/.cache/pip"
    if [ -d "$REPO/../shared/data" ]; then
        mount --bind "$REPO/../shared/data" "$ROOT/rsclip/shared/data"
        mount -o remount,bind,ro "$ROOT/rsclip/shared/data"
    fi
    local folder
    for folder in $(pip_local_folders); do
        mkdir -p "$ROOT$folder"
        mount --bind "$folder" "$ROOT$folder"
        mount -o remount,bind,ro "$ROOT$folder"
    done
    local keep=() var
    for var in $(compgen -e); do
        case "$var" in
            PIP_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY|CI|QGIS340_*) ;&
            SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE)
                keep+=("$var=${!var}") ;;
        esac
    done
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${keep[@]}" /bin/bash /rsclip/repo/tools/qgis340/inside.sh
}

# Everything in one function: bash reads it whole, so editing this file during a run cannot derail the run.
main() {
    if [ "${1:-}" = "--inside-namespace" ]; then
        inside_namespace
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "make test-qgis340 needs root (mmdebstrap, chroot and mounts): run it with sudo" >&2
        exit 2
    fi
    local total=$SECONDS
    build_root
    copy_host_config
    log "Packaging the plugin as its release zip"
    rm -rf "$CACHE/work" "${ROOT:?}"/tmp/* "$ROOT"/tmp/.[!.]*
    mkdir -p "$CACHE/work"
    /usr/bin/python3 "$REPO/tools/package.py" --out .qgis340/work/dist
    unshare --mount --propagation private /bin/bash "$REPO/tools/qgis340/run.sh" --inside-namespace
    log "make test-qgis340 passed in $((SECONDS - total)) s"
}

main "$@"
