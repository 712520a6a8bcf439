#!/usr/bin/env python3
"""Interleaved latency of several commands, on a loaded machine.

    python3 scripts/bench-interleaved.py ROUNDS NAME='COMMAND ARGS' NAME='COMMAND ARGS' ...

Each round runs every command once, in turn (A, B, C, A, B, C, ...), so that load changes during
the run hit every command alike (hyperfine runs all of one command before the next, which on a
shared VM can put a load spike on one side only). Commands are split like a shell would
(shlex) but run without one, leading VAR=VALUE words setting the environment; their stdout and stderr go to /dev/null, and each must exit 0. Five
warm-up rounds are not counted. Prints a markdown table: median and quartiles in ms, and each
median over the first command's. scripts/bench-launch-ab.py is the same for builds of elastos.
"""
import os
import shlex
import statistics
import sys
import time


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    commands = [arg.split("=", 1) for arg in sys.argv[2:]]
    devnull = os.open("/dev/null", os.O_RDWR)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    times = {name: [] for name, _ in commands}
    for round_ in range(rounds + 5):
        for name, command in commands:
            argv, env = shlex.split(command), dict(os.environ)
            while "=" in argv[0]:
                name_, value = argv.pop(0).split("=", 1)
                env[name_] = value
            start = time.perf_counter()
            pid = os.posix_spawnp(argv[0], argv, env, file_actions=quiet)
            _, status = os.waitpid(pid, 0)
            elapsed = time.perf_counter() - start
            if status != 0:
                sys.exit(f"{name}: `{command}` ended with wait status {status}")
            if round_ >= 5:
                times[name].append(elapsed * 1000)
    first = statistics.median(times[commands[0][0]])
    print(f"| command ({rounds} interleaved rounds) | median ms | p25 | p75 | x {commands[0][0]} |")
    print("|---|---|---|---|---|")
    for name, launches in times.items():
        q1, median, q3 = statistics.quantiles(launches, n=4)
        print(f"| {name} | {median:.2f} | {q1:.2f} | {q3:.2f} | {median / first:.1f} |")


if __name__ == "__main__":
    main()
