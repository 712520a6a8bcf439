#!/usr/bin/env bash
# Many jailed apps under the broker daemon (issue #16, section 2): APPS detached apps at once,
# then a crash loop and a memory bomb beside them, and whether the others' calls still get
# answered within 2x their idle latency.
#
#   bash scripts/bench-apps.sh             # as root (cgroups); needs the workspace's binaries
#
# In one run, with the real `elastos broker` in its own ELASTOS_HOME under a temporary dir:
#   1. a provider (elastos-broker-probe serve S, detached) and the idle latency of CALLS echo calls
#      from a client app (`elastos run`, attached to the daemon), p50/p99 as the client measures
#      each call;
#   2. APPS detached apps (elastos-probe sleep), each `elastos run -d` timed end to end (CLI start to
#      the instance id printed: verify, jail, attach, log pipes), p50/p99; the daemon's resident
#      memory before and after, per app; the apps' own memory (their cgroups) for comparison;
#   3. a crash loop (`exit 1`, --restart always) and a memory bomb (mem-bomb past its 64 MiB
#      limit, --restart always) start; the client's calls again, p50/p99, after LOADED_WAIT s;
#   4. the daemon stops (SIGTERM): every app is stopped and no cgroup is left.
# Prints a markdown report; environment: APPS (200), CALLS (2000), LOADED_WAIT (5),
# CARGO_TARGET_DIR (the repo's target/).
set -euo pipefail

APPS=${APPS:-200}
CALLS=${CALLS:-2000}
LOADED_WAIT=${LOADED_WAIT:-5}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
ELASTOS=$BIN/elastos

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench-apps.sh: %s\n' "$*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || die "run as root (the apps' memory limits and figures come from cgroups)"
for binary in elastos elastos-broker elastos-loader elastos-probe elastos-broker-probe; do
  [[ -x $BIN/$binary ]] || die "$BIN/$binary is missing: cargo build --release --locked --workspace --bins"
done
command -v python3 >/dev/null || die "python3 is needed for the statistics"

WORK=$(mktemp -d /tmp/elastos-bench-apps.XXXXXX)
export ELASTOS_HOME=$WORK/home
# The first run of each bundle warns that its publisher is not trusted: not news here.
export ELASTOS_LOG=error
mkdir -p "$ELASTOS_HOME"
DAEMON_PID=
cleanup() {
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 200); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SERVICE=5a0c3f7e-9d41-4f8e-a7b2-6c1d2e3f4a50
stage() { # NAME ID ENTRY SERVICES-TOML LIMITS-TOML
  local dir=$WORK/$1
  mkdir -p "$dir"
  cp "$BIN/$3" "$dir/"
  printf '[app]\nid = "%s"\nname = "%s"\nversion = "0.1.0"\nentry = "%s"\n\n%s\n%s\n' \
    "$2" "$1" "$3" "$4" "$5" >"$dir/manifest.toml"
  "$ELASTOS" bundle pack "$dir" -o "$WORK/$1.bundle" >/dev/null 2>&1
}
stage provider 0b7d9c1e-2f3a-4b5c-8d6e-7f8091a2b3c4 elastos-broker-probe \
  "[services]
provides = [\"$SERVICE\"]" ""
stage client 1c8e0d2f-3a4b-4c5d-9e7f-8091a2b3c4d5 elastos-broker-probe \
  "[services]
uses = [\"$SERVICE\"]" ""
stage sleeper 2d9f1e3a-4b5c-4d6e-8f80-91a2b3c4d5e6 elastos-probe "" ""
stage crasher 3ea02f4b-5c6d-4e7f-9091-a2b3c4d5e6f7 elastos-probe "" ""
stage bomb 4fb1305c-6d7e-4f80-81a2-b3c4d5e6f708 elastos-probe "" \
  "[limits]
memory = \"64MiB\""

"$ELASTOS" broker --idle-stop 0 >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do [[ -S $ELASTOS_HOME/run/broker.sock ]] && break; sleep 0.1; done
[[ -S $ELASTOS_HOME/run/broker.sock ]] || die "the daemon did not start: $(cat "$WORK/daemon.log")"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"; }

"$ELASTOS" run -d "$WORK/provider.bundle" -- serve "$SERVICE" >/dev/null
sleep 0.5
calls() { # OUT: CALLS echo calls from a client app, one JSON line per call
  local steps=()
  for _ in $(seq "$CALLS"); do steps+=("call:$SERVICE:echo:0123456789abcdef0123456789abcdef"); done
  "$ELASTOS" run "$WORK/client.bundle" -- client "lookup:$SERVICE" "${steps[@]}" >"$1"
}
percentiles() { # FILE (one number a line) -> "p50 p99 n"
  python3 -c '
import sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(f"{q(0.5):.1f} {q(0.99):.1f} {len(v)}")' "$1"
}
call_us() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        step = json.loads(line)
        if step["step"].startswith("call:"):
            assert step["outcome"] == "OK", step
            print(step["us"])' "$1"; }

say "idle latency: $CALLS calls"
calls "$WORK/idle.json"
call_us "$WORK/idle.json" >"$WORK/idle.us"
read -r IDLE_P50 IDLE_P99 IDLE_N < <(percentiles "$WORK/idle.us")

RSS_BEFORE=$(rss_kib)
say "starting $APPS detached apps"
: >"$WORK/start.ms"
for i in $(seq "$APPS"); do
  t0=$(date +%s%N)
  "$ELASTOS" run -d "$WORK/sleeper.bundle" -- sleep 3600 "app$i" >/dev/null
  t1=$(date +%s%N)
  awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.3f\n", ns / 1e6 }' >>"$WORK/start.ms"
done
sleep 2
RSS_AFTER=$(rss_kib)
read -r START_P50 START_P99 START_N < <(percentiles "$WORK/start.ms")
"$ELASTOS" ps --format json >"$WORK/ps.json"
RUNNING=$(python3 -c '
import json, sys
ps = json.load(open(sys.argv[1]))
print(sum(1 for i in ps["instances"] if i["state"] == "running" and i["name"] == "sleeper"))' "$WORK/ps.json")
APP_MEM_KIB=$(python3 -c '
import json, sys, statistics
ps = json.load(open(sys.argv[1]))
m = [i["memory_bytes"] for i in ps["instances"] if i["memory_bytes"]]
print(int(statistics.median(m) / 1024))' "$WORK/ps.json")

say "crash loop and memory bomb"
CRASHER=$("$ELASTOS" run -d --restart always "$WORK/crasher.bundle" -- exit 1)
BOMB=$("$ELASTOS" run -d --restart always "$WORK/bomb.bundle" -- mem-bomb 1073741824)
sleep "$LOADED_WAIT"
calls "$WORK/loaded.json"
call_us "$WORK/loaded.json" >"$WORK/loaded.us"
read -r LOADED_P50 LOADED_P99 LOADED_N < <(percentiles "$WORK/loaded.us")
CRASHER_RESTARTS=$("$ELASTOS" inspect "$CRASHER" | python3 -c 'import json,sys; print(json.load(sys.stdin)["restarts"])')
BOMB_STATE=$("$ELASTOS" inspect "$BOMB" | python3 -c '
import json, sys
i = json.load(sys.stdin)
codes = sorted({r["exit_code"] for r in i["runs"] if r["exit_code"] is not None})
print(i["restarts"], "restarts, exit codes", codes)')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

say "stopping the daemon"
kill -TERM "$DAEMON_PID"
for _ in $(seq 300); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DAEMON_PID" 2>/dev/null; then die "the daemon did not stop within 30 s"; fi
DAEMON_PID=
LEFT=$( (find /sys/fs/cgroup/memory/elastos /sys/fs/cgroup/pids/elastos /sys/fs/cgroup/elastos \
  -mindepth 1 -maxdepth 1 -type d 2>/dev/null || true) | wc -l)

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat <<EOF
## $APPS jailed apps under the daemon ($(date -u +%Y-%m-%d), load average $LOAD)

| what | value |
|---|---|
| apps running at once | $RUNNING of $APPS detached, plus the provider, a crash loop and a memory bomb |
| \`elastos run -d\` end to end, p50 / p99 | $START_P50 / $START_P99 ms ($START_N starts, one after another) |
| daemon resident memory before / after | $((RSS_BEFORE / 1024)) / $((RSS_AFTER / 1024)) MiB: $(((RSS_AFTER - RSS_BEFORE) / APPS)) KiB per app |
| an app's own memory (its cgroup, median) | $APP_MEM_KIB KiB |
| echo call, idle, p50 / p99 | $IDLE_P50 / $IDLE_P99 µs ($IDLE_N calls) |
| echo call, $APPS apps + crash loop + memory bomb, p50 / p99 | $LOADED_P50 / $LOADED_P99 µs: $(ratio "$LOADED_P50" "$IDLE_P50")x / $(ratio "$LOADED_P99" "$IDLE_P99")x idle |
| crash loop after ${LOADED_WAIT}s + the calls | $CRASHER_RESTARTS restarts (backoff 250 ms doubling to 30 s) |
| memory bomb (64 MiB limit) | $BOMB_STATE |
| cgroups left after the daemon stopped | $LEFT |

Reproduce: APPS=$APPS CALLS=$CALLS LOADED_WAIT=$LOADED_WAIT bash scripts/bench-apps.sh
EOF
