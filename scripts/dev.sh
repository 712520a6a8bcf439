#!/usr/bin/env bash
# Set up a Debian 12 machine for elastos, then run the demo or the test suite.
#
#   bash scripts/dev.sh demo   # build, pack examples/hello, run it twice, inspect it; then the
#                              # broker examples: echo and pub/sub, providers started on demand
#   bash scripts/dev.sh test   # build and run every test of the workspace
#
# Runs as root, or as a user with sudo (used only for apt-get, useradd and creating the target dir).
# Idempotent: Debian packages are installed only when missing (and `apt-get update` runs only then),
# the test user is created only when missing, and cargo rebuilds only what changed.
# CARGO_TARGET_DIR defaults to the repo's target/; ELASTOS_HOME, when set, is used by the demo.
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
  util-linux     # setpriv, unshare, nsenter
  passwd         # useradd
  procps         # ps, pgrep
)

# The unprivileged user the tests run jailed apps as.
TEST_USER="elastos-test"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  echo "usage: bash scripts/dev.sh demo|test" >&2
  exit 2
}

say() { printf '\n==> %s\n' "$*" >&2; }
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

create_test_user() {
  if getent passwd "$TEST_USER" >/dev/null; then
    return
  fi
  say "creating the unprivileged test user $TEST_USER"
  as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$TEST_USER"
}

find_cargo() {
  if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH=$HOME/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null ||
    die "cargo not found in PATH or in $HOME/.cargo/bin; install the Rust toolchain (https://rustup.rs) as this user and rerun"
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
  create_test_user
  find_cargo
  prepare_target_dir
}

# Packs examples/hello, runs it twice (its run counter lives in its persistent home), and shows
# the bundle and its policy. Uses the caller's elastos state ($ELASTOS_HOME, else XDG dirs).
demo() {
  say "building"
  cargo build --release --workspace --bins
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

[[ $# -eq 1 ]] || usage
case $1 in
  demo)
    setup
    demo
    ;;
  test)
    setup
    cargo build --release --workspace --bins && cargo test --release --workspace
    ;;
  *) usage ;;
esac
