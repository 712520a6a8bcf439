#!/usr/bin/env bash
# A 64-byte call through the elastos broker, next to its floor and D-Bus (issue #3, section 6).
#
#   bash scripts/bench-broker.sh            # as root (installs the dbus package if missing)
#
# Side by side in one run, every path client -> middle -> server -> middle -> client with each
# part in its own process:
#   - relay:   a raw two-hop unix socket relay (blocking threads; the floor),
#   - elastos: the real `elastos broker` daemon (its own ELASTOS_HOME under a temporary dir), a
#              client and a service using elastos-sdk, attached through the daemon's control
#              socket the way `elastos run` attaches an app (not jailed),
#   - dbus:    a private dbus-daemon, zbus client and server, method Echo(ay) -> ay.
# For each: p50/p99 of CALLS sequential calls (after warm-up) and calls/s sequential, calls/s with
# FLIGHT calls in flight from one client and from CLIENTS clients, medians over ROUNDS rounds; and
# the broker's memory per idle connected app (IDLE_APPS attached). Then the flood scenario
# (issue 12), elastos and D-Bus in turn, FLOOD_ROUNDS rounds: a service that serves one call at
# a time in SERVICE_US µs; a well-behaved client's FLOOD_CALLS sequential calls, unloaded, then
# while a flooder keeps FLOOD_IN_FLIGHT calls in flight against the same service: p50/p99 and
# refusals. The benchmark itself is the Cargo project bench/ (not a workspace member), built
# into BENCH_TARGET_DIR.
#
# Prints a markdown report and keeps it, with every round's numbers as JSON, in $BENCH_OUT.
# Environment: ROUNDS (default 5), CALLS (20000), FLIGHT (32), FLIGHT_CALLS (200000),
# CLIENTS (4), IDLE_APPS (1000), FLOOD_ROUNDS (3), FLOOD_CALLS (300), FLOOD_IN_FLIGHT (256),
# SERVICE_US (500), CARGO_TARGET_DIR (repo's target/, for the elastos binary),
# ELASTOS (an elastos binary to use instead of building $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos),
# BENCH_TARGET_DIR ($CARGO_TARGET_DIR/bench-build), BENCH_OUT ($CARGO_TARGET_DIR/bench).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
CALLS=${CALLS:-20000}
FLIGHT=${FLIGHT:-32}
FLIGHT_CALLS=${FLIGHT_CALLS:-200000}
CLIENTS=${CLIENTS:-4}
IDLE_APPS=${IDLE_APPS:-1000}
FLOOD_ROUNDS=${FLOOD_ROUNDS:-3}
FLOOD_CALLS=${FLOOD_CALLS:-300}
FLOOD_IN_FLIGHT=${FLOOD_IN_FLIGHT:-256}
SERVICE_US=${SERVICE_US:-500}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-$CARGO_TARGET_DIR/bench-build}
BENCH_OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench}
BUILD_ELASTOS=${ELASTOS:+no}
ELASTOS=${ELASTOS:-$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos}
BENCH=$BENCH_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos-broker-bench
REPRODUCE="ROUNDS=$ROUNDS CALLS=$CALLS FLIGHT=$FLIGHT FLIGHT_CALLS=$FLIGHT_CALLS CLIENTS=$CLIENTS IDLE_APPS=$IDLE_APPS FLOOD_ROUNDS=$FLOOD_ROUNDS FLOOD_CALLS=$FLOOD_CALLS FLOOD_IN_FLIGHT=$FLOOD_IN_FLIGHT SERVICE_US=$SERVICE_US bash scripts/bench-broker.sh"

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench-broker.sh: %s\n' "$*" >&2
  exit 1
}

say "reproduce with: (cd $REPO_ROOT && $REPRODUCE)"
command -v cargo >/dev/null || die "cargo not found"
if ! command -v dbus-daemon >/dev/null; then
  [[ $EUID -eq 0 ]] || die "dbus-daemon is missing; install the Debian package dbus (as root)"
  say "installing dbus (dbus-daemon)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbus >/dev/null
fi
# Idle apps hold one descriptor each here and in the daemon.
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > IDLE_APPS + 256 )) || die "IDLE_APPS=$IDLE_APPS needs more than $(ulimit -n) open files"

say "building elastos (release) and the benchmark"
# `elastos broker` runs the elastos-broker binary next to it (or $ELASTOS_BROKER).
[[ $BUILD_ELASTOS == no ]] || (cd "$REPO_ROOT" && cargo build --release --quiet -p elastos -p elastos-broker-daemon --bins)
[[ -x $ELASTOS ]] || die "$ELASTOS is not an executable"
(cd "$REPO_ROOT/bench" && CARGO_TARGET_DIR=$BENCH_TARGET_DIR cargo build --release --quiet)

WORK=$(mktemp -d /tmp/elastos-bench-broker.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for WHAT TEST...: up to 10 s for the test to pass
  local what=$1 tries=0
  shift
  until "$@"; do
    (( ++tries < 200 )) || die "$what did not come up; see $WORK"
    sleep 0.05
  done
}

say "starting the broker daemon (ELASTOS_HOME=$WORK/home)"
mkdir -p "$WORK/home"
ELASTOS_HOME=$WORK/home "$ELASTOS" broker --idle-stop 0 2>"$WORK/broker.log" &
BROKER_PID=$!
PIDS+=("$BROKER_PID")
wait_for "the broker daemon" test -S "$WORK/home/run/broker.sock"

say "starting a private dbus-daemon"
cat >"$WORK/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$WORK/dbus.sock</listen>
  <auth>EXTERNAL</auth>
  <!-- The flood keeps FLOOD_IN_FLIGHT calls waiting for replies: a lower bound on pending
       replies per connection would refuse the flooder's excess instead of queueing it. -->
  <limit name="max_replies_per_connection">50000</limit>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file="$WORK/dbus.conf" --nofork --print-address=1 >"$WORK/dbus.address" 2>"$WORK/dbus.log" &
DBUS_PID=$!
PIDS+=("$DBUS_PID")
wait_for "dbus-daemon" test -s "$WORK/dbus.address"
DBUS_ADDRESS=$(head -n1 "$WORK/dbus.address")

mkdir -p "$BENCH_OUT"
MACHINE="$(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), \
$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), \
$(. /etc/os-release && echo "$PRETTY_NAME"), dbus-daemon $(dbus-daemon --version | sed -n '1s/.* //p'), \
$(rustc --version | cut -d' ' -f1-2)"
# In the background, so that an interrupt reaches the trap at once (bash runs traps only between
# foreground commands); its children die with it.
"$BENCH" run --control "$WORK/home/run/broker.sock" --broker-pid "$BROKER_PID" \
  --dbus "$DBUS_ADDRESS" --dbus-pid "$DBUS_PID" --dir "$WORK" --rounds "$ROUNDS" --calls "$CALLS" \
  --flight "$FLIGHT" --flight-calls "$FLIGHT_CALLS" --clients "$CLIENTS" --idle "$IDLE_APPS" \
  --flood-rounds "$FLOOD_ROUNDS" --flood-calls "$FLOOD_CALLS" --flood-in-flight "$FLOOD_IN_FLIGHT" \
  --service-us "$SERVICE_US" \
  --json "$BENCH_OUT/broker.json" >"$WORK/report.md" &
BENCH_PID=$!
PIDS+=("$BENCH_PID")
wait "$BENCH_PID"
{
  echo "Machine: $MACHINE."
  echo "Command: \`$REPRODUCE\` ($(date -u +%Y-%m-%d), commit $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))."
  echo
  cat "$WORK/report.md"
} | tee "$BENCH_OUT/broker.md"
say "report: $BENCH_OUT/broker.md, every round: $BENCH_OUT/broker.json"
say "reproduce with: (cd $REPO_ROOT && $REPRODUCE)"
