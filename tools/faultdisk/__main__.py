"""python -m tools.faultdisk BACKING MOUNTPOINT [--foreground] [--name disk.img]

Without --foreground it starts itself in the background, waits (bounded) until mounted, prints
the PID and returns; the daemon's messages go to a log file it names.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from tools.faultdisk import DEFAULT_NAME, ROOT, START_TIMEOUT_S, mount_entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.faultdisk", description=__doc__.split("\n\n")[1])
    ap.add_argument("backing", help="image file (or block device) the disk passes I/O through to")
    ap.add_argument("mountpoint", help="an existing empty directory")
    ap.add_argument("--foreground", "-f", action="store_true", help="serve in this process")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"file name under the mount point ({DEFAULT_NAME})")
    ap.add_argument("--die-with-parent", action="store_true", help="unmount and exit when the parent dies")
    ap.add_argument("--debug", action="store_true", help="libfuse debug output (foreground only)")
    a = ap.parse_args(argv)
    if "/" in a.name or a.name in ("", ".", "..", ".control"):
        ap.error(f"--name {a.name!r}: a plain file name other than .control")
    if a.foreground:
        from tools.faultdisk.fs import serve  # imports mfusepy (libfuse3)

        return serve(a.backing, a.mountpoint, name=a.name, die_with_parent=a.die_with_parent, debug=a.debug)
    return _background(a)


def _background(a: argparse.Namespace) -> int:
    fd, log_path = tempfile.mkstemp(prefix="faultdisk-", suffix=".log")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.faultdisk", a.backing, a.mountpoint, "--foreground", "--name", a.name],
        stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=env, cwd=ROOT, start_new_session=True)
    os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT_S
    while mount_entry(a.mountpoint) is None:
        if proc.poll() is not None:
            with open(log_path) as f:
                sys.stderr.write(f.read())
            return proc.returncode or 1
        if time.monotonic() > deadline:
            proc.kill()
            print(f"faultdisk: not mounted within {START_TIMEOUT_S:g} s; see {log_path}", file=sys.stderr)
            return 1
        time.sleep(0.02)
    mnt = os.path.abspath(a.mountpoint)
    print(f"faultdisk: pid {proc.pid} serves {os.path.join(mnt, a.name)}; control {mnt}/.control;"
          f" log {log_path}; stop with: kill {proc.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
