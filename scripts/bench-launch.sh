#!/usr/bin/env bash
# Launch latency and idle memory of `elastos run`, next to plain exec, bwrap and crun.
#
#   bash scripts/bench-launch.sh            # as root, after `bash scripts/dev.sh test` (or demo)
#
# 1. Builds a trivial static binary (`gcc -static -O2`): with no argument it exits 0 at once, with
#    `pause` it sleeps until killed. Packs it as a bundle, an OCI bundle and a bwrap command line
#    with the same mounts as the elastos jail.
# 2. One hyperfine run as root, every row side by side: plain exec (the floor), `elastos run` (bundle
#    cache warm; with its cgroup, and with --no-cgroup, rlimits only), bwrap, and crun. crun refuses
#    this machine's hybrid cgroups, so each crun launch runs inside `unshare -m` with the cgroup2
#    mount detached; the same wrapper around plain exec is measured too, and its cost is subtracted
#    in a derived row.
# 3. A second hyperfine run as the unprivileged user elastos-test: plain exec, elastos, bwrap; then
#    bwrap and elastos (and OLD_BIN's) as that user again, interleaved round by round
#    (scripts/bench-interleaved.py), which a busy machine disturbs less. The user's namespace
#    holder (loader/src/holder.rs), made by the first launch, serves every later one; it is
#    stopped at the end.
# 4. Idle memory: starts IDLE_APPS sleeping apps under elastos (with OLD_BIN, under the old
#    elastos too; and under bwrap, for comparison) and sums the proportional set size (Pss, /proc/PID/smaps_rollup) of each launcher and of its
#    jailed processes.
# 5. Starts through the broker daemon, as root, interleaved: plain exec, `elastos --version` (the
#    CLI process alone), `elastos run -d` from a warm jail and without one, `elastos run` with the
#    daemon up and without one, and bwrap; the warm jails' idle Pss; and, from the daemons' debug
#    logs, where a detached start goes inside the daemon (request read -> the app's exec, and its
#    parts: verify and plan, id maps, the loader up to the app's exec).
#    DAEMON_ONLY=1 runs this step alone (after step 1) and prints its tables.
# 6. Stdout throughput, as root: the test binary writes STDOUT_MIB MiB (1 GiB) to its stdout, piped
#    to a consumer (the same binary reading to EOF). Plain exec, `elastos run` (the app's stdout is
#    a pipe of the launcher's, which splices it to its own stdout) and bwrap (the app writes to the
#    host pipe directly), side by side in one hyperfine run of THROUGHPUT_RUNS runs.
#
# Prints a markdown report and keeps it, with hyperfine's JSON, in $BENCH_OUT.
# Environment: RUNS (default 100), WARMUP (5), IDLE_APPS (10), STDOUT_MIB (1024), THROUGHPUT_RUNS
# (10), DAEMON_ONLY (0), CARGO_TARGET_DIR (repo's target/),
# BENCH_OUT ($CARGO_TARGET_DIR/bench), OLD_BIN (a directory with the `elastos` and
# `elastos-loader` of another build, e.g. the last release: measured in the same runs, as
# "elastos run (old)", so that a change is compared with what it replaces on the same machine).
set -euo pipefail

RUNS=${RUNS:-100}
WARMUP=${WARMUP:-5}
IDLE_APPS=${IDLE_APPS:-10}
STDOUT_MIB=${STDOUT_MIB:-1024}
THROUGHPUT_RUNS=${THROUGHPUT_RUNS:-10}
DAEMON_ONLY=${DAEMON_ONLY:-0}
TEST_USER="elastos-test"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BENCH_OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench}
ELASTOS=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench-launch.sh: %s\n' "$*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || die "run as root: the crun rows use a rootful spec and detach a cgroup mount"
for tool in cargo gcc hyperfine bwrap crun jq unshare setpriv; do
  command -v "$tool" >/dev/null || die "$tool not found; run 'bash scripts/dev.sh test' first to install what the benchmark needs"
done
getent passwd "$TEST_USER" >/dev/null || die "user $TEST_USER missing; run 'bash scripts/dev.sh test' first"
TEST_UID=$(id -u "$TEST_USER")
TEST_GID=$(id -g "$TEST_USER")

WORK=$(mktemp -d /tmp/elastos-bench.XXXXXX)
chmod 0755 "$WORK"
IDLE_PIDS=()

# Every process this script started in the background, with its descendants, is killed on exit.
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}
# SIGTERM first: `elastos run` forwards it to the app and, once the app is gone, removes the app's
# cgroups (a SIGKILLed launcher could not). Whatever still runs after 5 s is killed.
stop_idle_apps() {
  local pid tree deadline=$((SECONDS + 5))
  for pid in "${IDLE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${IDLE_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.05
    done
    mapfile -t tree < <(descendants "$pid")
    kill -KILL "${tree[@]}" "$pid" 2>/dev/null || true
  done
  for pid in "${IDLE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  IDLE_PIDS=()
}
cleanup() {
  stop_idle_apps 2>/dev/null
  as_test_user "$ELASTOS" unshare --stop >/dev/null 2>&1 || true
  # Anything left that runs from $WORK (e.g. the child of a launcher killed for hanging) is ours.
  local leftovers
  mapfile -t leftovers < <(pgrep -f -- "$WORK" || true)
  if ((${#leftovers[@]})); then
    kill -KILL "${leftovers[@]}" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a command as the unprivileged test user, with a clean environment.
as_test_user() {
  setpriv --reuid="$TEST_UID" --regid="$TEST_GID" --clear-groups \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/user" ELASTOS_HOME="$WORK/user/elastos" "$@"
}

say "building elastos and elastos-loader (release)"
(cd "$REPO_ROOT" && cargo build --release -p elastos -p elastos-loader-exe --bins)
[[ -x $ELASTOS ]] || die "$ELASTOS was not built"

say "building the static test binary and its bundles in $WORK"
mkdir -p "$WORK/app" "$WORK/bundle-src/bin" "$WORK/oci/rootfs" "$WORK/home-root" "$WORK/user/home"
cat >"$WORK/true.c" <<'EOF'
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char buffer[1 << 20];

/* No argument: exit 0 at once. "pause": sleep until killed (exit 3 if sleeping is refused).
   "write N": N MiB of 'x' to stdout, then exit 0 (4 on a failed write). "sink": read stdin to EOF
   (exit 5 on a failed read). */
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "pause") == 0) {
        struct timespec hour = {3600, 0};
        for (;;)
            if (nanosleep(&hour, NULL) != 0 && errno != EINTR)
                return 3;
    }
    if (argc > 2 && strcmp(argv[1], "write") == 0) {
        memset(buffer, 'x', sizeof buffer);
        for (long mib = atol(argv[2]); mib > 0; mib--)
            for (size_t done = 0; done < sizeof buffer;) {
                ssize_t n = write(1, buffer + done, sizeof buffer - done);
                if (n < 0 && errno != EINTR)
                    return 4;
                done += n > 0 ? (size_t)n : 0;
            }
    }
    if (argc > 1 && strcmp(argv[1], "sink") == 0)
        for (;;) {
            ssize_t n = read(0, buffer, sizeof buffer);
            if (n == 0)
                break;
            if (n < 0 && errno != EINTR)
                return 5;
        }
    return 0;
}
EOF
gcc -static -O2 -o "$WORK/app/true" "$WORK/true.c"
cp "$WORK/app/true" "$WORK/bundle-src/bin/true"
cp "$WORK/app/true" "$WORK/oci/rootfs/true"
cat >"$WORK/bundle-src/manifest.toml" <<'EOF'
[app]
id = "5f0e7a8c-3b1d-4e2a-9c6f-0d8b7e1a2c34"
name = "bench-true"
version = "0.1.0"
entry = "bin/true"

[limits]
memory = "64MiB"
threads = 16
EOF
BUNDLE=$WORK/true.bundle
ELASTOS_HOME=$WORK/root-elastos "$ELASTOS" bundle pack "$WORK/bundle-src" -o "$BUNDLE" >&2
chmod 0644 "$BUNDLE"
chown -R "$TEST_UID:$TEST_GID" "$WORK/user"
# elastos records a verified bundle only once the file has been unchanged for 2 s (see
# elastos_bundle::RECORD_MIN_AGE); the runs below measure the usual case, a bundle run before.
sleep 2.1

(cd "$WORK/oci" && crun spec)
jq '.process.args = ["/true"] | .process.terminal = false | .root.readonly = true' \
  "$WORK/oci/config.json" >"$WORK/oci/config.json.new"
mv "$WORK/oci/config.json.new" "$WORK/oci/config.json"

# The elastos jail's filesystem, in bwrap's words: ro /usr with Debian's merged-/usr symlinks, the two
# /etc files, the app read-only at /app, a writable home, private /tmp, /proc and a minimal /dev.
bwrap_cmd() {
  local home=$1
  echo "bwrap --unshare-all --die-with-parent --uid 1000 --gid 1000 --hostname elastos" \
    "--ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64" \
    "--symlink usr/bin /bin --symlink usr/sbin /sbin" \
    "--ro-bind /etc/ld.so.cache /etc/ld.so.cache --ro-bind /etc/localtime /etc/localtime" \
    "--ro-bind $WORK/app /app --bind $home /home/app --tmpfs /tmp --proc /proc --dev /dev" \
    "--chdir /home/app --setenv HOME /home/app /app/true"
}
# "write N" to a consumer: the throughput rows.
SINK="$WORK/app/true sink"
WRITE_PLAIN="$WORK/app/true write $STDOUT_MIB | $SINK"
WRITE_ELASTOS="$ELASTOS run $BUNDLE -- write $STDOUT_MIB | $SINK"
WRITE_BWRAP="$(bwrap_cmd "$WORK/home-root") write $STDOUT_MIB | $SINK"
# crun refuses hybrid cgroups: detach the cgroup2 mount in a private mount namespace first. The
# container id uses the shell's pid ($$), unique among live processes; crun run deletes the
# container when it exits, so ids never pile up.
if mountpoint -q /sys/fs/cgroup/unified; then
  CGROUP_FIX='umount -l /sys/fs/cgroup/unified; '
else
  CGROUP_FIX=''
fi
wrapped() { echo "unshare -m --propagation private sh -c '${CGROUP_FIX}exec $*'"; }

PLAIN="$WORK/app/true"
ELASTOS_RUN="$ELASTOS run $BUNDLE"
OLD_ROWS=()
if [[ -n ${OLD_BIN:-} ]]; then
  [[ -x $OLD_BIN/elastos && -x $OLD_BIN/elastos-loader ]] ||
    die "OLD_BIN=$OLD_BIN must hold the elastos and elastos-loader of the build to compare with"
  OLD_ROWS=(-n "elastos run (old)" "$OLD_BIN/elastos run $BUNDLE")
fi
ELASTOS_RUN_NO_CGROUP="$ELASTOS run --no-cgroup $BUNDLE"
BWRAP_ROOT=$(bwrap_cmd "$WORK/home-root")
BWRAP_USER=$(bwrap_cmd "$WORK/user/home")
CRUN=$(wrapped "crun run --bundle $WORK/oci bench-\$\$")
PLAIN_WRAPPED=$(wrapped "$PLAIN")

# hyperfine waits forever for a command that hangs, so each one is tried first, with a deadline.
say "checking every command once (this also warms elastos's bundle cache)"
export ELASTOS_HOME=$WORK/root-elastos
for cmd in "$PLAIN" "$ELASTOS_RUN" "$ELASTOS_RUN_NO_CGROUP" "$BWRAP_ROOT" "$CRUN" "$PLAIN_WRAPPED" \
  ${OLD_BIN:+"${OLD_ROWS[2]}"}; do
  timeout --kill-after=2 20 sh -c "exec $cmd" ||
    die "this command failed (exit $?; 124 or 137: still running after 20 s): $cmd"
done
for cmd in "$PLAIN" "$ELASTOS_RUN" "$BWRAP_USER" ${OLD_BIN:+"${OLD_ROWS[2]}"}; do
  as_test_user timeout --kill-after=2 20 sh -c "exec $cmd" ||
    die "this command failed as $TEST_USER (exit $?; 124 or 137: still running after 20 s): $cmd"
done

mkdir -p "$BENCH_OUT"
((DAEMON_ONLY)) || {
say "launch latency as root: $RUNS runs each"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$BENCH_OUT/launch-root.json" \
  -n "plain exec" "$PLAIN" \
  -n "elastos run" "$ELASTOS_RUN" \
  "${OLD_ROWS[@]}" \
  -n "elastos run --no-cgroup" "$ELASTOS_RUN_NO_CGROUP" \
  -n "bwrap" "$BWRAP_ROOT" \
  -n "crun run (in wrapper)" "$CRUN" \
  -n "plain exec (in wrapper)" "$PLAIN_WRAPPED" >&2
}

# Starts through the daemon: a detached run (`run -d`, answered once the app runs) from a warm jail
# and with none (`--warm-jails 0`), and `elastos run` with a daemon up, next to plain exec and
# bwrap, interleaved round by round (scripts/bench-interleaved.py) so that the machine's load hits
# every row alike. The daemons are stopped like idle apps (SIGTERM, which empties the pool).
say "starts through the daemon: $RUNS interleaved rounds"
# Debug lines of a start (host/src/apps.rs `app started`, loader/src/spawn.rs `jail started`, the
# daemon's `detached run answered`): ~10 µs each, in every daemon row alike.
for pool in 2 0; do
  ELASTOS_HOME=$WORK/daemon-$pool \
    ELASTOS_LOG=info,elastos_host::apps=debug,elastos_loader=debug,elastos_broker::daemon=debug \
    "$ELASTOS" broker --warm-jails "$pool" >"$WORK/daemon-$pool.log" 2>&1 &
  IDLE_PIDS+=($!)
done
for pool in 2 0; do
  for _ in $(seq 100); do [[ -S $WORK/daemon-$pool/run/broker.sock ]] && break; sleep 0.1; done
  [[ -S $WORK/daemon-$pool/run/broker.sock ]] || die "the daemon did not start: $(cat "$WORK/daemon-$pool.log")"
done
python3 "$REPO_ROOT/scripts/bench-interleaved.py" "$RUNS" "plain exec=$PLAIN" \
  "elastos --version=$ELASTOS --version" \
  "elastos run -d, warm jail=ELASTOS_HOME=$WORK/daemon-2 $ELASTOS run -d $BUNDLE" \
  "elastos run -d, no warm jail=ELASTOS_HOME=$WORK/daemon-0 $ELASTOS run -d $BUNDLE" \
  "elastos run, daemon up=ELASTOS_HOME=$WORK/daemon-2 $ELASTOS run $BUNDLE" \
  "elastos run, no daemon=ELASTOS_HOME=$WORK/root-elastos $ELASTOS run $BUNDLE" \
  "bwrap=$BWRAP_ROOT" >"$BENCH_OUT/daemon-starts.md"
warm_metric() {
  ELASTOS_HOME=$WORK/daemon-2 "$ELASTOS" metrics | awk -v name="$1" '$1 == name { print $2 }'
}
WARM_PARKED=$(warm_metric elastos_warm_jails_parked)
WARM_PSS_KIB=$(($(warm_metric elastos_warm_jails_idle_pss_bytes) / 1024))
stop_idle_apps 2>/dev/null
# Inside the daemon, medians over the detached starts of the run above.
python3 - "$WORK/daemon-2.log" "$WORK/daemon-0.log" >"$BENCH_OUT/daemon-breakdown.md" <<'PY'
import re, statistics, sys
fields = [("detached run answered", "request_to_exec_us", "request read -> answer (app exec'd)"),
          ("app started", "verify_plan_us", "verify (record) and plan"),
          ("app started", "loader_to_exec_us", "plan -> app exec'd"),
          ("jail started", "to_go_ahead_us", "  of which: input, mount sources, id maps"),
          ("jail started", "id_maps_us", "    of which: id maps"),
          ("jail started", "loader_us", "  of which: go-ahead -> app exec'd (child, loader, app)")]
print("| inside the daemon, median µs | warm jail | no warm jail |")
print("|---|---|---|")
for message, field, label in fields:
    cells = []
    for log in sys.argv[1:]:
        values = [int(m.group(1)) for line in open(log, errors="replace")
                  if message in line for m in [re.search(field + r"=(\d+)", line)] if m]
        cells.append(f"{statistics.median(values):.0f} ({len(values)})" if values else "-")
    print(f"| {label} | {cells[0]} | {cells[1]} |")
PY
if ((DAEMON_ONLY)); then
  cat "$BENCH_OUT/daemon-starts.md"
  echo
  cat "$BENCH_OUT/daemon-breakdown.md"
  echo
  echo "Idle cost of the warm jails: $WARM_PARKED parked, Pss of their processes $WARM_PSS_KIB KiB in all."
  exit 0
fi

say "stdout throughput as root: $STDOUT_MIB MiB, $THROUGHPUT_RUNS runs each"
for cmd in "$WRITE_PLAIN" "$WRITE_ELASTOS" "$WRITE_BWRAP"; do
  timeout --kill-after=2 120 bash -o pipefail -c "$cmd" ||
    die "this command failed (exit $?; 124 or 137: still running after 120 s): $cmd"
done
hyperfine --shell "bash -o pipefail" --warmup 1 --runs "$THROUGHPUT_RUNS" \
  --export-json "$BENCH_OUT/stdout-throughput.json" \
  -n "plain exec" "$WRITE_PLAIN" \
  -n "elastos run" "$WRITE_ELASTOS" \
  -n "bwrap" "$WRITE_BWRAP" >&2

say "launch latency as $TEST_USER: $RUNS runs each"
as_test_user hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/user/launch-user.json" \
  -n "plain exec" "$PLAIN" \
  -n "elastos run" "$ELASTOS_RUN" \
  "${OLD_ROWS[@]}" \
  -n "bwrap" "$BWRAP_USER" >&2
cp "$WORK/user/launch-user.json" "$BENCH_OUT/launch-user.json"
say "launch latency as $TEST_USER, interleaved: $RUNS rounds"
as_test_user python3 "$REPO_ROOT/scripts/bench-interleaved.py" "$RUNS" "bwrap=$BWRAP_USER" \
  "elastos run=$ELASTOS_RUN" ${OLD_BIN:+"elastos run (old)=${OLD_ROWS[2]}"} \
  >"$BENCH_OUT/launch-user-interleaved.md"

# Prints "pss_kib_of_launchers pss_kib_of_jailed_processes processes" summed over IDLE_PIDS, once
# every launcher has a descendant running the test binary (comm "true").
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
measure_idle() {
  local pid kid kids deadline=$((SECONDS + 20)) launcher=0 jailed=0 processes=0
  for pid in "${IDLE_PIDS[@]}"; do
    until descendants "$pid" | xargs -r -I{} cat /proc/{}/comm 2>/dev/null | grep -qx true; do
      kill -0 "$pid" 2>/dev/null || die "an idle app under pid $pid exited early"
      ((SECONDS < deadline)) || die "an idle app under pid $pid did not start within 20 s"
      sleep 0.05
    done
  done
  sleep 1 # let start-up transients settle
  for pid in "${IDLE_PIDS[@]}"; do
    launcher=$((launcher + $(pss_kib "$pid")))
    processes=$((processes + 1))
    kids=$(descendants "$pid")
    for kid in $kids; do
      if grep -qx true "/proc/$kid/comm"; then
        jailed=$((jailed + $(pss_kib "$kid")))
      else
        launcher=$((launcher + $(pss_kib "$kid")))
      fi
      processes=$((processes + 1))
    done
  done
  echo "$launcher $jailed $processes"
}

say "idle memory: $IDLE_APPS sleeping apps under elastos"
for _ in $(seq "$IDLE_APPS"); do
  "$ELASTOS" run "$BUNDLE" -- pause &
  IDLE_PIDS+=($!)
done
read -r ELASTOS_LAUNCHER_KIB ELASTOS_APP_KIB ELASTOS_PROCS < <(measure_idle)
stop_idle_apps 2>/dev/null # bash reports each killed job

if [[ -n ${OLD_BIN:-} ]]; then
  say "idle memory: $IDLE_APPS sleeping apps under elastos (old: $OLD_BIN)"
  for _ in $(seq "$IDLE_APPS"); do
    "$OLD_BIN/elastos" run "$BUNDLE" -- pause &
    IDLE_PIDS+=($!)
  done
  read -r OLD_LAUNCHER_KIB OLD_APP_KIB OLD_PROCS < <(measure_idle)
  stop_idle_apps 2>/dev/null
fi

say "idle memory: $IDLE_APPS sleeping apps under bwrap"
for _ in $(seq "$IDLE_APPS"); do
  # shellcheck disable=SC2086 # the command line is split into words on purpose
  $BWRAP_ROOT pause &
  IDLE_PIDS+=($!)
done
read -r BWRAP_LAUNCHER_KIB BWRAP_APP_KIB BWRAP_PROCS < <(measure_idle)
stop_idle_apps 2>/dev/null

# Markdown rows from a hyperfine JSON: name, median ms, mean ± sd ms, x plain exec, x bwrap.
latency_table() {
  jq -r '
    (.results | map({(.command): .median}) | add) as $m
    | .results[]
    | [.command, (.median * 1000), (.mean * 1000), (.stddev * 1000),
       (.median / $m["plain exec"]), (.median / $m["bwrap"])]
    | @tsv' "$1" |
    awk -F'\t' '{ printf "| %s | %.2f | %.2f ± %.2f | %.1f | %.2f |\n", $1, $2, $3, $4, $5, $6 }'
}
# The crun launch without the wrapper's own cost: crun(wrapped) - plain(wrapped) + plain.
crun_net_row() {
  jq -r '
    (.results | map({(.command): .median}) | add) as $m
    | ($m["crun run (in wrapper)"] - $m["plain exec (in wrapper)"] + $m["plain exec"]) as $net
    | [($net * 1000), ($net / $m["plain exec"]), ($net / $m["bwrap"])] | @tsv' "$1" |
    awk -F'\t' '{ printf "| crun run, wrapper cost subtracted | %.2f | (derived) | %.1f | %.2f |\n", $1, $2, $3 }'
}
# Markdown rows from the throughput JSON: name, median s, GiB/s, x plain exec, x bwrap, and the
# CPU seconds (user + system, mean) of the whole pipeline as hyperfine reports them (the rusage of
# waited-for descendants), which a loaded machine disturbs less than the wall time.
throughput_table() {
  jq -r --argjson mib "$STDOUT_MIB" '
    (.results | map({(.command): .median}) | add) as $m
    | .results[]
    | [.command, .median, ($mib / 1024 / .median), (.median / $m["plain exec"]),
       (.median / $m["bwrap"]), (.user + .system)]
    | @tsv' "$1" |
    awk -F'\t' '{ printf "| %s | %.3f | %.2f | %.2f | %.2f | %.3f |\n", $1, $2, $3, $4, $5, $6 }'
}
mib_per_app() { awk -v kib="$1" -v n="$IDLE_APPS" 'BEGIN { printf "%.2f", kib / n / 1024 }'; }

REPORT=$BENCH_OUT/results.md
{
  echo "Machine: $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release), kernel $(uname -r)," \
    "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))," \
    "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM."
  echo "Peers: $(bwrap --version), $(crun --version | head -n1), $(hyperfine --version)."
  echo
  echo "Launch of a static binary that exits 0, as root (\`hyperfine -N --warmup $WARMUP --runs $RUNS\`):"
  echo
  echo "| command | median ms | mean ± sd ms | x plain exec | x bwrap |"
  echo "|---|---|---|---|---|"
  latency_table "$BENCH_OUT/launch-root.json"
  crun_net_row "$BENCH_OUT/launch-root.json"
  echo
  echo "The same as the unprivileged user $TEST_USER:"
  echo
  echo "| command | median ms | mean ± sd ms | x plain exec | x bwrap |"
  echo "|---|---|---|---|---|"
  latency_table "$BENCH_OUT/launch-user.json"
  echo
  echo "The same, interleaved (\`scripts/bench-interleaved.py\`, x bwrap):"
  echo
  cat "$BENCH_OUT/launch-user-interleaved.md"
  echo
  echo "$STDOUT_MIB MiB written to stdout, piped to a consumer, as root" \
    "(\`hyperfine --warmup 1 --runs $THROUGHPUT_RUNS\`; the shell's own cost is in every row):"
  echo
  echo "| command | median s | GiB/s | x plain exec | x bwrap | CPU s |"
  echo "|---|---|---|---|---|---|"
  throughput_table "$BENCH_OUT/stdout-throughput.json"
  echo
  echo "Starts through the broker daemon, as root, interleaved (\`scripts/bench-interleaved.py\`):"
  echo
  cat "$BENCH_OUT/daemon-starts.md"
  echo
  cat "$BENCH_OUT/daemon-breakdown.md"
  echo
  echo "Idle cost of the warm jails: $WARM_PARKED parked (2 per kind of start), Pss of their" \
    "processes $WARM_PSS_KIB KiB in all."
  echo
  echo "Memory of $IDLE_APPS idle apps (a static binary sleeping), Pss per app, as root:"
  echo
  echo "| launcher | jailed app MiB | launcher MiB | total MiB | processes per app |"
  echo "|---|---|---|---|---|"
  echo "| elastos run | $(mib_per_app "$ELASTOS_APP_KIB") | $(mib_per_app "$ELASTOS_LAUNCHER_KIB") |" \
    "$(mib_per_app $((ELASTOS_APP_KIB + ELASTOS_LAUNCHER_KIB))) | $((ELASTOS_PROCS / IDLE_APPS)) |"
  if [[ -n ${OLD_BIN:-} ]]; then
    echo "| elastos run (old) | $(mib_per_app "$OLD_APP_KIB") | $(mib_per_app "$OLD_LAUNCHER_KIB") |" \
      "$(mib_per_app $((OLD_APP_KIB + OLD_LAUNCHER_KIB))) | $((OLD_PROCS / IDLE_APPS)) |"
  fi
  echo "| bwrap | $(mib_per_app "$BWRAP_APP_KIB") | $(mib_per_app "$BWRAP_LAUNCHER_KIB") |" \
    "$(mib_per_app $((BWRAP_APP_KIB + BWRAP_LAUNCHER_KIB))) | $((BWRAP_PROCS / IDLE_APPS)) |"
} >"$REPORT"
cat "$REPORT"
say "report and hyperfine JSON kept in $BENCH_OUT"
