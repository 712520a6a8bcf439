#!/usr/bin/env bash
# `podman run --rm` of one image with elastos (`elastos-runc`), crun and runc as the OCI runtime,
# interleaved, in one run: the time of the whole `podman run`, which is what a user waits for.
#
#   bash scripts/bench-oci.sh        # as root, after `cargo build --release --workspace --bins`
#
# The image is a rootfs holding one static binary (`gcc -static` of tests/apps/hello.c), made
# with `podman import`. podman runs as ../shared/MACHINE.md says it must on this machine: inside
# one private mount namespace with a tmpfs on /run and /var/lib and the hybrid cgroup2 mount
# detached (crun refuses hybrid cgroups otherwise), vfs storage and cgroupfs in a temp dir,
# `--network none`. Each round runs every runtime once, in turn, so a load change hits them
# alike; the report gives each runtime's median and its ratio to crun's.
#
# Environment: RUNS (rounds, default 30), WARMUP (2), CARGO_TARGET_DIR (repo's target/).
set -euo pipefail

RUNS=${RUNS:-30}
WARMUP=${WARMUP:-2}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
ELASTOS=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/elastos

die() { echo "bench-oci: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (podman with a rootful runtime)"
[[ -x $ELASTOS ]] || die "$ELASTOS is missing: cargo build --release --workspace --bins"
for tool in podman crun runc gcc; do
  command -v "$tool" >/dev/null || die "$tool is missing: bash scripts/dev.sh setup"
done

WORK=$(mktemp -d /tmp/bench-oci-XXXXXX)
cleanup() {
  # The engine's cgroups under our --cgroup-parent (conmon's, and crun's or runc's).
  find /sys/fs/cgroup -depth -type d -path '*/bench-oci-parent*' -exec rmdir {} + 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

gcc -static -O2 -o "$WORK/hello" "$REPO_ROOT/tests/apps/hello.c"
mkdir -p "$WORK/rootfs/bin"
cp "$WORK/hello" "$WORK/rootfs/bin/hello"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
ln -s "$ELASTOS" "$WORK/elastos-runc"

cat >"$WORK/inside.sh" <<'EOF'
set -euo pipefail
W=$1 RUNS=$2 WARMUP=$3
P=(podman --root "$W/p/root" --runroot "$W/p/rr" --tmpdir "$W/p/tmp" --network-config-dir "$W/p/net"
   --storage-driver vfs --cgroup-manager cgroupfs --events-backend none)
"${P[@]}" import -q "$W/rootfs.tar" localhost/bench-oci:hello >/dev/null
run() {
  "${P[@]}" --runtime "$1" run --rm --pull never --network none --cgroup-parent /bench-oci-parent \
    --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 localhost/bench-oci:hello /bin/hello >/dev/null
}
declare -A RUNTIME=([elastos]="$W/elastos-runc" [crun]=$(command -v crun) [runc]=$(command -v runc))
for name in elastos crun runc; do
  out=$("${P[@]}" --runtime "${RUNTIME[$name]}" run --rm --pull never --network none \
        --cgroup-parent /bench-oci-parent --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
        localhost/bench-oci:hello /bin/hello)
  [[ $out == "hello from C" ]] || { echo "$name printed: $out" >&2; exit 1; }
  for _ in $(seq "$WARMUP"); do run "${RUNTIME[$name]}"; done
done
for round in $(seq "$RUNS"); do
  for name in elastos crun runc; do
    start=$(date +%s%N)
    run "${RUNTIME[$name]}"
    end=$(date +%s%N)
    echo "$name $(( (end - start) / 1000 ))" >>"$W/times"
  done
done
"${P[@]}" rmi -f localhost/bench-oci:hello >/dev/null
EOF

unshare -m --propagation private sh -c \
  'mount -t tmpfs -o mode=755 tmpfs /run && mount -t tmpfs tmpfs /var/lib &&
   { umount -l /sys/fs/cgroup/unified 2>/dev/null; true; } && exec bash "$0" "$@"' \
  "$WORK/inside.sh" "$WORK" "$RUNS" "$WARMUP"

median() { sort -n | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
crun_median=$(awk '$1=="crun"{print $2}' "$WORK/times" | median)
echo "podman run --rm, $RUNS interleaved rounds ($(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| runtime | median ms | x crun |"
echo "|---|---|---|"
for name in elastos crun runc; do
  m=$(awk -v n="$name" '$1==n{print $2}' "$WORK/times" | median)
  awk -v n="$name" -v m="$m" -v c="$crun_median" 'BEGIN {printf "| %s | %.1f | %.2f |\n", n, m/1000, m/c}'
done
