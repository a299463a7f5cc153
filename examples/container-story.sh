#!/usr/bin/env bash
# The Docker story with real containers (docker-story.sh plays it with unshare/nsenter):
#
#   1. a producer container (`--ipc shareable`) creates a message queue with a fixed key and
#      sends a message into it, then waits;
#   2. a container with its own IPC namespace (the default) asks for the key and fails:
#      msg.get_failed, ENOENT, key_lives_in_ns naming the producer's namespace and container;
#   3. a consumer started with `--ipc container:PRODUCER` joins the producer's namespace
#      (ipc_ns.join, naming both containers) and receives the message;
#   4. `ENGINE rm -f` of the producer: its namespace is destroyed with the queue left in it,
#      naming the containers that lived there.
#
# Usage (as root): examples/container-story.sh [docker|podman] [path/to/nsipc-agent]
#   The engine defaults to docker; the agent to target/release/nsipc-agent of this checkout.
#   nsipc-agent/tests/containers/setup.sh installs the engine if missing, starts dockerd if it
#   is not running, and builds the local image nsipc-test:latest (busybox and a static SysV
#   helper; no registry needed).
# Environment: STORY_KEY (default 0xd0c4e8), STORY_EVENTS (keep the agent's whole stream in
#   this file; default: a temporary file).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
engine=${1:-docker}
agent=${2:-$here/../target/release/nsipc-agent}
key=$((${STORY_KEY:-0xd0c4e8}))

if [[ $(id -u) != 0 ]]; then
    echo "container-story.sh: needs root (it loads eBPF programs and runs containers)" >&2
    exit 1
fi
if [[ ! -x $agent ]]; then
    echo "container-story.sh: no agent at $agent: run cargo build --release, or pass its path" >&2
    exit 1
fi
command -v jq >/dev/null || { echo "container-story.sh: needs jq" >&2; exit 1; }
"$here/../nsipc-agent/tests/containers/setup.sh" "$engine" >&2
image=nsipc-test:latest
run=(run)
if [[ $engine == podman ]]; then
    image=localhost/nsipc-test:latest
    # runc is refused raising the rlimits podman asks for by default on some hosts ("error
    # setting rlimit type 7"); crun, podman's first choice, refuses hosts with cgroup v1
    # controllers next to cgroup2; and no network is needed.
    run=(run --runtime runc --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
fi

work=$(mktemp -d)
events=${STORY_EVENTS:-$work/events.jsonl}
producer=nsipc-story-producer-$$
lonely=nsipc-story-lonely-$$
consumer=nsipc-story-consumer-$$
agent_pid=
cleanup() {
    "$engine" rm -f "$consumer" "$lonely" "$producer" >/dev/null 2>&1 || true
    [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most $3 seconds, default 20) until some line of the stream matches jq condition $2.
wait_for() {
    local what=$1 condition=$2 seconds=${3:-20}
    for _ in $(seq $((seconds * 10))); do
        # A line being written is not JSON yet: jq then fails and we look again.
        if jq -e -n "[inputs | select($condition)] | length > 0" "$events" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$agent_pid" 2>/dev/null; then
            echo "container-story.sh: the agent exited: $(cat "$work/agent.err")" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "container-story.sh: no $what in the agent's stream within $seconds s" >&2
    exit 1
}

echo "== nsipc-agent starts tracing"
"$agent" trace --events=-shm.attach,-shm.detach >"$events" 2>"$work/agent.err" &
agent_pid=$!
wait_for agent.ready '.event == "agent.ready"'

echo "== 1. $producer (--ipc shareable) creates queue key $key and sends a message"
"$engine" "${run[@]}" -d --name "$producer" --ipc shareable "$image" \
    sh -c "sysvtool msg-create $key && sysvtool msg-send $key hello && exec sysvtool hold" >/dev/null
wait_for "the producer's queue" ".event == \"msg.create\" and .key == $key"

echo "== 2. $lonely, in its own IPC namespace, asks for key $key"
"$engine" "${run[@]}" --rm --name "$lonely" "$image" sysvtool msg-get "$key" || true

echo "== 3. $consumer joins the producer's namespace (--ipc container:$producer)"
"$engine" "${run[@]}" --rm --name "$consumer" --ipc "container:$producer" "$image" sysvtool msg-recv "$key" 5

echo "== 4. $engine rm -f $producer (the queue was never removed)"
# The namespace by its inum and its life (`ns_id`, or `ns_gen` where the kernel has no ns_id):
# the kernel reuses a freed namespace's inum, so the inum alone may also match an earlier life.
producer_ns=$(jq -r -n "[inputs | select(.event == \"msg.create\" and .key == $key)][0].ns" "$events")
producer_life=$(jq -c -n "[inputs | select(.event == \"msg.create\" and .key == $key)][0] | .ns_id // .ns_gen" "$events")
"$engine" rm -f "$producer" >/dev/null
wait_for "the producer's namespace destroyed" \
    ".event == \"ipc_ns.destroy\" and .ns == $producer_ns and (.ns_id // .ns_gen) == $producer_life" 30
kill -INT "$agent_pid"
wait "$agent_pid" || true
agent_pid=

echo
echo "== the story, as nsipc-agent told it (container: name; time, tid, uid, ppid left out)"
jq -c --argjson key "$key" --argjson ns "$producer_ns" --argjson life "$producer_life" '
  select((.key == $key)
         or (.ns == $ns and (.ns_id // .ns_gen) == $life and (.event | startswith("ipc_ns.")))
         or (.event | startswith("agent.r")))
  | del(.time, .tid, .uid, .ppid, .ns_id, .from_ns_id, .inventory_ms)
  | if .container then .container |= .name else . end
  | if .containers then .containers |= map(.name) else . end
  | if .ns_containers then .ns_containers |= map(.name) else . end
  | if .key_lives_in_ns then .key_lives_in_ns |= map({ns, containers: (.containers | map(.name))})
    else . end' "$events"
