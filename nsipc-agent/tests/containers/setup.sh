#!/usr/bin/env bash
# Real containers for the privileged container tests, idempotently, for ENGINE (`docker`, the
# default, or `podman`): installs Debian's docker.io or podman, and busybox-static and gcc,
# when missing; starts dockerd when it is not running (machines without systemd: no iptables,
# no bridge, overlay2); podman needs no daemon. Then builds the image nsipc-test:latest
# (podman: localhost/nsipc-test:latest) with `ENGINE import` from a rootfs made here (busybox
# and the static SysV helper sysvtool.c: no registry is needed). The image is rebuilt only
# when sysvtool.c changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
engine=${1:-docker}
image=nsipc-test:latest
log=/var/log/nsipc-dockerd.log

# The docker and podman tests run at once: one setup at a time (two apt-get runs would fight
# over apt's lock). dockerd, left running, must not inherit the lock's fd.
exec 9>/run/nsipc-container-setup.lock
flock 9

missing=()
case "$engine" in
docker) command -v dockerd >/dev/null || missing+=(docker.io) ;;
podman)
    command -v podman >/dev/null || missing+=(podman)
    # The tests run podman's containers with runc, which podman does not bring when crun is
    # there (see tests/docker.rs).
    command -v runc >/dev/null || missing+=(runc)
    ;;
*) echo "setup.sh: unknown engine $engine (docker or podman)" >&2; exit 2 ;;
esac
[[ -x /bin/busybox ]] || missing+=(busybox-static)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
if ((${#missing[@]})); then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $engine == docker ]] && ! docker info >/dev/null 2>&1; then
    setsid dockerd --iptables=false --bridge=none --storage-driver=overlay2 >>"$log" 2>&1 </dev/null 9>&- &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "setup.sh: dockerd did not start; see $log" >&2; exit 1; }
fi

hash=$(sha256sum "$here/sysvtool.c" | cut -c1-16)
if [[ $("$engine" image inspect -f '{{index .Config.Labels "nsipc.sysvtool"}}' "$image" 2>/dev/null) != "$hash" ]]; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp}
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh sleep cat ls echo true; do ln -s busybox "$root/bin/$applet"; done
    gcc -static -O2 -o "$root/bin/sysvtool" "$here/sysvtool.c"
    tar -C "$root" -c . | "$engine" import -c "LABEL nsipc.sysvtool=$hash" -c 'ENV PATH=/bin' - "$image" >/dev/null
fi
echo "setup.sh: $engine ready, $image built"
