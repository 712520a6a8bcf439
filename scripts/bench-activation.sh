#!/usr/bin/env bash
# Activation latency: the first call to an installed provider that is not running, against a call
# to a running one, under the daemon (with and without warm jails) and with the broker embedded in
# `elastos run` (which asks the `elastos-broker request` helper where the provider is).
#
#   bash scripts/bench-activation.sh      # as root, after a release build; ROUNDS (default 30)
#
# Each round runs one client (elastos-broker-probe) whose steps are `lookup:S` then `call:S:echo`:
# the lookup of a provider that is not running starts it (its µs are the activation, end to end as
# the client sees it: lookup in the installed apps, verify (cache hit), clone, plan, loader, app
# start, handshake, register); the call is then a call to a running one. The provider is stopped
# between rounds, so every round activates it. The three setups are interleaved round by round:
# the machine's load hits each alike. Prints a markdown table of medians, and where the start of a
# jail went (the `app started` debug line of host/src/apps.rs: clone, verify and plan, loader to
# the app's exec), from the daemons' logs and the embedded broker's.
set -euo pipefail
ROUNDS=${ROUNDS:-30}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/x86_64-unknown-linux-gnu/release
ELASTOS=$BIN/elastos
WORK=$(mktemp -d /tmp/elastos-activation.XXXXXX)
chmod 0755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
[[ -x $BIN/elastos-broker-probe ]] || { echo "build the workspace first (elastos-broker-probe)" >&2; exit 1; }

SERVICE=5a0c3f7e-9d41-4f8e-a7b2-6c1d2e3f4a50
PROVIDER_ID=0b7d9c1e-2f3a-4b5c-8d6e-7f8091a2b3c4
stage() { # NAME ID SERVICES-TOML [ACTIVATE-ARGS]
  local dir=$WORK/$1
  mkdir -p "$dir"
  cp "$BIN/elastos-broker-probe" "$dir/"
  printf '[app]\nid = "%s"\nname = "%s"\nversion = "0.1.0"\nentry = "elastos-broker-probe"\n\n%s\n' \
    "$2" "$1" "$3" >"$dir/manifest.toml"
  [[ -z ${4:-} ]] || printf '%s' "$4" >"$dir/activate.args"
  ELASTOS_HOME=$WORK/keys "$ELASTOS" bundle pack "$dir" -o "$WORK/$1.bundle" >/dev/null 2>&1
}
stage provider $PROVIDER_ID "[services]
provides = [\"$SERVICE\"]" "serve
$SERVICE"
stage client 1c8e0d2f-3a4b-4c5d-9e7f-8091a2b3c4d5 "[services]
uses = [\"$SERVICE\"]"

SETUPS=(warm cold embedded)
export ELASTOS_LOG=info,elastos_host::apps=debug
for setup in "${SETUPS[@]}"; do
  export ELASTOS_HOME=$WORK/$setup
  "$ELASTOS" install "$WORK/provider.bundle" >/dev/null
  case $setup in
    warm) "$ELASTOS" broker --idle-stop 0 --warm-jails 2 >"$WORK/$setup.log" 2>&1 & PIDS+=($!) ;;
    cold) "$ELASTOS" broker --idle-stop 0 --warm-jails 0 >"$WORK/$setup.log" 2>&1 & PIDS+=($!) ;;
    embedded) continue ;;
  esac
  for _ in $(seq 100); do [[ -S $ELASTOS_HOME/run/broker.sock ]] && break; sleep 0.1; done
done
sleep 2.1 # bundles are recorded as verified once unchanged for 2 s

for round in $(seq $((ROUNDS + 3))); do
  for setup in "${SETUPS[@]}"; do
    export ELASTOS_HOME=$WORK/$setup
    "$ELASTOS" run "$WORK/client.bundle" -- client "lookup:$SERVICE" "call:$SERVICE:echo:x" \
      >"$WORK/out" 2>>"$WORK/embedded.log" || true
    ((round > 3)) && grep '^{' "$WORK/out" | sed "s/^/$setup /" >>"$WORK/steps"
    [[ $setup == embedded ]] || "$ELASTOS" stop "$PROVIDER_ID" >/dev/null 2>&1 || true
  done
done
python3 - "$WORK/steps" "$ROUNDS" "$WORK" "$PROVIDER_ID" <<'PY'
import json, re, statistics, sys
steps = {}
for line in open(sys.argv[1]):
    setup, text = line.split(" ", 1)
    step = json.loads(text)
    assert step["outcome"] == "OK", (setup, step)
    kind = "lookup" if step["step"].startswith("lookup") else "call"
    steps.setdefault((setup, kind), []).append(step["us"] / 1000)
print(f"| setup ({sys.argv[2]} interleaved rounds) | first call: lookup that activates, median ms | call to the running provider, median ms |")
print("|---|---|---|")
names = {"warm": "daemon, --warm-jails 2", "cold": "daemon, --warm-jails 0",
         "embedded": "embedded broker (elastos run, no daemon)"}
for setup in ("warm", "cold", "embedded"):
    print(f"| {names[setup]} | {statistics.median(steps[(setup, 'lookup')]):.2f} "
          f"| {statistics.median(steps[(setup, 'call')]):.3f} |")
print()
print("| setup | starts | clone µs | verify and plan µs | loader to the app's exec µs |")
print("|---|---|---|---|---|")
for setup in ("warm", "cold", "embedded"):
    fields = {"clone_us": [], "verify_plan_us": [], "loader_to_exec_us": []}
    for line in open(f"{sys.argv[3]}/{setup}.log", errors="replace"):
        if "app started" in line and sys.argv[4] in line:
            for name, values in fields.items():
                found = re.search(name + r"=(\d+)", line)
                if found:
                    values.append(int(found.group(1)))
    if fields["clone_us"]:
        print(f"| {names[setup]} | {len(fields['clone_us'])} | "
              + " | ".join(f"{statistics.median(v):.0f}" for v in fields.values()) + " |")
PY
