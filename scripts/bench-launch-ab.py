#!/usr/bin/env python3
"""Interleaved launch latency of two (or more) builds of elastos, on a loaded machine.

    python3 scripts/bench-launch-ab.py ROUNDS ELASTOS_HOME BUNDLE NAME=DIR NAME=DIR ...

Each DIR holds an `elastos` and its `elastos-loader`. Every round launches `elastos run BUNDLE --
exit 0` once with each build, in turn (A, B, A, B, ...), so that load changes during the run hit
every build alike; hyperfine runs all of one command before the next, which on a shared VM can
put a load spike on one side only. Five warm-up rounds are not counted. Prints the median and the
quartiles of each build's launches. BUNDLE should exit 0 on `exit 0` (the probe app does), and
should have been run once before, so that its cache is warm. Run it as the user to measure (e.g.
`setpriv --reuid=elastos-test ... /usr/bin/python3 ...`).
"""
import os
import statistics
import sys
import time


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    rounds, home, bundle = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    builds = dict(arg.split("=", 1) for arg in sys.argv[4:])
    env = {"PATH": "/usr/bin:/bin", "ELASTOS_HOME": home, "HOME": home}
    devnull = os.open("/dev/null", os.O_RDWR)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    times = {name: [] for name in builds}
    for round_ in range(rounds + 5):
        for name, directory in builds.items():
            argv = [os.path.join(directory, "elastos"), "run", bundle, "--", "exit", "0"]
            start = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
            _, status = os.waitpid(pid, 0)
            elapsed = time.perf_counter() - start
            if status != 0:
                sys.exit(f"{name}: `{' '.join(argv)}` ended with wait status {status}")
            if round_ >= 5:
                times[name].append(elapsed * 1000)
    for name, launches in times.items():
        q = statistics.quantiles(launches, n=4)
        print(f"{name:8s} median {statistics.median(launches):6.2f} ms  "
              f"p25 {q[0]:6.2f}  p75 {q[2]:6.2f}  (n={len(launches)})")


if __name__ == "__main__":
    main()
