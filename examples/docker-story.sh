#!/usr/bin/env bash
# The Docker story, without Docker: every container gets its own IPC namespace, so two
# containers using the same SysV key never meet, unless one joins the other's namespace
# (`docker run --ipc container:producer`, which is a setns). Here:
#
#   1. a producer in its own IPC namespace (`unshare --ipc`) creates a message queue with a fixed
#      key and sends messages into it;
#   2. a consumer in another new namespace asks for the key and fails: msg.get_failed, ENOENT,
#      with key_lives_in naming the producer's namespace;
#   3. a consumer that joins the producer's namespace (`nsenter --ipc`) finds the queue and
#      receives the messages: ipc_ns.join;
#   4. everything exits, the queue was never removed: the namespaces are destroyed, the queue
#      with the producer's (msg.destroy, reason namespace_teardown).
#
# The agent runs in the background for the story, is stopped with SIGINT, and the story's
# events are printed with jq. See examples/README.md for the queries.
#
# Usage (as root): examples/docker-story.sh [path/to/nsipc-agent]
#   default agent: target/release/nsipc-agent of this checkout (cargo build --release)
# Environment: STORY_KEY (the SysV key, default 0xd0c4e7), STORY_MESSAGES (default 3),
#   STORY_EVENTS (keep the agent's whole stream in this file; default: a temporary file).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
agent=${1:-$here/../target/release/nsipc-agent}
key=$((${STORY_KEY:-0xd0c4e7}))
messages=${STORY_MESSAGES:-3}

if [[ $(id -u) != 0 ]]; then
    echo "docker-story.sh: needs root (it loads eBPF programs and creates namespaces)" >&2
    exit 1
fi
if [[ ! -x $agent ]]; then
    echo "docker-story.sh: no agent at $agent: run cargo build --release, or pass its path" >&2
    exit 1
fi
for tool in jq perl unshare nsenter readlink; do
    command -v "$tool" >/dev/null || { echo "docker-story.sh: needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
events=${STORY_EVENTS:-$work/events.jsonl}
agent_pid=
producer_pid=
cleanup() {
    [[ -n $producer_pid ]] && kill "$producer_pid" 2>/dev/null || true
    [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most $3 seconds, default 10) until some line of the stream matches the jq
# condition $2.
wait_for() {
    local what=$1 condition=$2 seconds=${3:-10}
    for _ in $(seq $((seconds * 20))); do
        # A line being written is not JSON yet: jq then fails and we look again.
        if jq -e -n "[inputs | select($condition)] | length > 0" "$events" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$agent_pid" 2>/dev/null; then
            echo "docker-story.sh: the agent exited: $(cat "$work/agent.err")" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "docker-story.sh: no $what in the agent's stream within $seconds s" >&2
    exit 1
}

# Waits (at most 10 s) for a file to appear.
wait_file() {
    for _ in $(seq 200); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    echo "docker-story.sh: $2 did not get ready within 10 s" >&2
    exit 1
}

echo "== nsipc-agent starts tracing"
"$agent" trace >"$events" 2>"$work/agent.err" &
agent_pid=$!
# Attaching can take long on slow machines (fentry under qemu without KVM: seconds).
wait_for agent.ready '.event == "agent.ready"' 60

echo "== 1. the producer, in its own IPC namespace, creates queue key $key and sends $messages messages"
mkfifo "$work/producer.done"
# IPC_CREAT | 0600; each message is a long type (1) then the text.
unshare --ipc perl -e '
    my ($key, $count, $ready, $done) = @ARGV;
    $| = 1;
    my $id = msgget($key, 01000 | 0600) // die "producer: msgget: $!\n";
    for my $i (1 .. $count) {
        msgsnd($id, pack("l! a*", 1, "message $i of $count"), 0) or die "producer: msgsnd: $!\n";
    }
    print "producer: queue id $id, key $key, in ", readlink("/proc/self/ns/ipc"), ", $count messages sent\n";
    open(my $r, ">", $ready) or die; close $r;
    open(my $d, "<", $done) or die; <$d>;    # until the story is over; the queue stays
' "$key" "$messages" "$work/producer.ready" "$work/producer.done" &
producer_pid=$!
wait_file "$work/producer.ready" "the producer"
producer_ns=$(readlink "/proc/$producer_pid/ns/ipc")

echo "== 2. a consumer in another new IPC namespace asks for key $key"
unshare --ipc perl -e '
    my ($key) = @ARGV;
    my $ns = readlink("/proc/self/ns/ipc");
    if (defined(my $id = msgget($key, 0))) { die "consumer: found queue $id in $ns: the namespaces are not separate\n" }
    print "consumer in its own namespace $ns: msgget(key $key): $!\n";
' "$key"

echo "== 3. a consumer joins the producer's namespace (nsenter --ipc, like docker run --ipc container:producer)"
nsenter --ipc="/proc/$producer_pid/ns/ipc" perl -e '
    my ($key, $count) = @ARGV;
    my $ns = readlink("/proc/self/ns/ipc");
    my $id = msgget($key, 0) // die "joined consumer: msgget: $!\n";
    for (1 .. $count) {
        msgrcv($id, my $buf, 256, 0, 0) or die "joined consumer: msgrcv: $!\n";
        my (undef, $text) = unpack("l! a*", $buf);
        print "consumer joined to $ns: received \"$text\"\n";
    }
' "$key" "$messages" &
consumer_pid=$!
wait "$consumer_pid"

echo "== 4. the producer exits without removing its queue"
echo done >"$work/producer.done"
wait "$producer_pid"
producer_pid=

# The stream comes within ~50 ms: wait for what the story made, then for the namespaces'
# destruction, which comes when the kernel frees them, a few milliseconds after the last exit.
# Namespaces are told apart by ns_id where the kernel has one (inums are reused at once).
wait_for msg.create ".event == \"msg.create\" and .key == $key"
wait_for msg.get_failed ".event == \"msg.get_failed\" and .key == $key"
wait_for ipc_ns.join ".event == \"ipc_ns.join\" and .comm == \"nsenter\" and .pid == $consumer_pid"
id_field=ns_id
if ! jq -e -n '[inputs | select(.event == "agent.ready")][0].ns_id' "$events" >/dev/null; then
    id_field=ns_gen
fi
story_namespaces=$(jq -n -c --argjson key "$key" '
    [inputs | select((.event == "msg.create" or .event == "msg.get_failed") and .key == $key)
        | {ns, id: (.ns_id // .ns_gen)}] | unique' "$events")
for ns in $(jq -r '.[] | "\(.ns):\(.id)"' <<<"$story_namespaces"); do
    wait_for "ipc_ns.destroy of ${ns%%:*}" \
        ".event == \"ipc_ns.destroy\" and .ns == ${ns%%:*} and .$id_field == ${ns##*:}"
done

kill -INT "$agent_pid"
wait "$agent_pid"
agent_pid=

echo
echo "== the story, as nsipc-agent told it (time, tid, uid left out)"
jq -c --argjson key "$key" --argjson namespaces "$story_namespaces" --arg field "$id_field" '
    def ours: . as $e | any($namespaces[]; .ns == $e.ns and .id == $e[$field]);
    select(.event == "agent.ready" or .event == "agent.stop"
        or (ours and (.event | test("^(ipc_ns|msg)\\.")))
        or (.key == $key))
    | del(.time, .tid, .uid, .version, .kernel, .ring_buffer_bytes, .programs)' "$events"
echo "producer namespace: $producer_ns"
