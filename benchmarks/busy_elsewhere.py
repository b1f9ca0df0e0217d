"""What `nas.sharing.BusyElsewhere` reads on this machine: the cores other work keeps busy, over a few
seconds each, with nothing added, beside a one-core busy loop, and beside a registered nas trainer that
spins one core (which must not count: it is already in the trainer count).

    .venv/bin/python benchmarks/busy_elsewhere.py [--seconds 2]

On a quiet machine the three figures are about 0, 1 and 0 (a training run's share of the cores,
`fair_threads`, drops by one beside the busy loop only). Whatever else the machine runs adds to all three. The default
suite checks the arithmetic with given /proc readings (tests/test_structure.py); this shows it against
the real kernel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from nas import sharing
from nas.device import default_threads

SPIN = "import sys\nprint('spinning', flush=True)\nwhile True: pass\n"
TRAINER = ("import sys\nfrom nas import sharing\nwith sharing.registered_trainer():\n"
           "    print('spinning', flush=True)\n    while True: pass\n")


def window(seconds: float) -> float:
    """Cores busy elsewhere over `seconds` from now."""
    import time

    busy = sharing.BusyElsewhere()
    busy()
    time.sleep(seconds)
    return busy()


def beside(code: str, seconds: float) -> float:
    """Cores busy elsewhere over `seconds` while a child runs `code`, read once the child says it spins."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout is None or child.stdout.readline().strip() != "spinning":
            raise SystemExit(f"the child did not start (exit {child.wait()})")
        return window(seconds)
    finally:
        child.kill()
        child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each reading (default 2)")
    args = parser.parse_args()
    cores = default_threads()
    print(f"{cores} cores; each figure is one reading over {args.seconds:g} s")
    print(f"{'beside':30} {'cores busy elsewhere':>20} {'expected on a quiet machine':>28}")
    for label, code, expected in (("nothing", None, 0), ("a one-core busy loop", SPIN, 1),
                                  ("a registered trainer (1 core)", TRAINER, 0)):
        seen = window(args.seconds) if code is None else beside(code, args.seconds)
        print(f"{label:30} {seen:20.2f} {expected:28d}")


if __name__ == "__main__":
    main()
