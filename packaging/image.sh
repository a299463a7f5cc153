#!/usr/bin/env bash
# Builds the container image the DaemonSet runs (packaging/daemonset.yaml) with `docker import`
# (no registry, no base image): the agent as /nsipc-agent and the libraries it links.
# Usage: packaging/image.sh AGENT TAG   e.g. packaging/image.sh target/release/nsipc-agent nsipc-agent:0.1.0
set -euo pipefail
agent=$1
tag=$2
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
cp "$agent" "$rootfs/nsipc-agent"
# Every library ldd names (the dynamic loader included), at the same path.
for lib in $(ldd "$agent" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
mkdir -p "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/tmp"
tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null
echo "$tag"
