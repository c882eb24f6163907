"""python -m tools.fusewatchdog MOUNTPOINT [--reset-pid PID] [--die-with-parent]"""

import argparse
import sys

from tools.fusewatchdog.fs import serve


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fusewatchdog", description=__doc__)
    ap.add_argument("mountpoint")
    ap.add_argument("--reset-pid", type=int, default=None, help="SIGKILLed on expiry (a PID namespace's init: all of it)")
    ap.add_argument("--die-with-parent", action="store_true")
    a = ap.parse_args()
    return serve(a.mountpoint, a.reset_pid, a.die_with_parent)


if __name__ == "__main__":
    sys.exit(main())
