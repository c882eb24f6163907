"""Node-local bookkeeping for MMP commands: the ballot-sector lock and holder records.

Why a local lock (diskhb uses none across hosts: they mean nothing there): Disk Paxos needs
exactly one writer per ballot sector, and every diskhb process of a node writes the same
sector (node i's). Two processes of one node balloting at once would overwrite each other's
accepted values and break the ballot. So processes of one node hold a lock for the block
while they ballot and commit. It serializes only processes of this node; other nodes are
kept apart by the ballot itself. (The daemon takes the same lock, see diskhb.mmp.held.)

The lock is a bound abstract unix socket (diskhb.runtime.claim_local_name), not a file lock.

Holder records (run_dir/mmp-UUID-K.holder, JSON): which local process holds which block,
so `diskhb mmp release RESOURCE` can ask it to release (SIGTERM) and wait for the CLEAN.
"""

from __future__ import annotations

import errno
import json
import os

from diskhb.errors import OperatorError
from diskhb.runtime import claim_local_name, local_name_holder, net_namespace
from diskhb.mmp.guard import BlockLocation


def ensure_run_dir(run_dir: str) -> str:
    try:
        os.makedirs(run_dir, mode=0o755, exist_ok=True)
    except OSError as e:
        raise OperatorError(f"{run_dir}: cannot create the run directory ({e.strerror});"
                            " run as root or pass --run-dir DIR") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise OperatorError(f"{run_dir}: not writable; run as root or pass --run-dir DIR")
    _check_net_namespace(run_dir)
    return run_dir


def _check_net_namespace(run_dir: str) -> None:
    """The ballot lock is an abstract socket name, and those exist per network namespace: a
    daemon under `ip netns exec` and a CLI outside it would both get "the" lock and ballot in
    one sector at once. So the run dir records the namespace of its first user (/run is
    cleared at boot) and every later user must be in the same one."""
    mine = net_namespace()
    path = os.path.join(run_dir, "mmp-netns")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(mine + "\n")
        return
    except FileExistsError:
        pass
    try:
        with open(path) as f:
            recorded = f.read(64).strip()
    except OSError as e:
        raise OperatorError(f"{path}: cannot read ({e.strerror})") from None
    if recorded != mine:
        raise OperatorError(f"{run_dir} is used by diskhb processes in network namespace {recorded}, this one"
                            f" is in {mine}: run every diskhb process of a node in one namespace (the local"
                            f" ballot lock does not reach across them); if the daemon moved for good, remove {path}")


def _key(loc: BlockLocation) -> str:
    return f"mmp-{loc.uuid.hex()}-{'dev' if loc.index is None else loc.index}"


def lock_scope(run_dir: str) -> str:
    """The scope of this node's ballot locks (guard.lock_key). The run dir is in it so test
    clusters (one run dir per simulated node) do not serialize each other."""
    return f"mmp-ballot {os.path.realpath(run_dir)}"


def ballot_lock_key(run_dir: str, loc: BlockLocation) -> str:
    """The lock name of a block for the processes of this node."""
    from diskhb.mmp.guard import lock_key

    return lock_key(lock_scope(run_dir), loc)


def try_lock(key: str, label: str):
    """The lock as a bound abstract socket (close it to free it), or None while another diskhb
    process of ours holds it. A holder of another uid is named, not waited for."""
    try:
        return claim_local_name(key)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise OperatorError(f"{label}: cannot take the local ballot lock ({e.strerror})") from None
    holder = local_name_holder(key)
    if holder is not None and holder[1] != os.geteuid():
        raise OperatorError(f"{label}: the local ballot lock is held by process {holder[0]} of uid"
                            f" {holder[1]}, not a diskhb process of ours; stop it")
    return None


def holder_path(run_dir: str, loc: BlockLocation) -> str:
    return os.path.join(run_dir, _key(loc) + ".holder")


def write_holder(run_dir: str, loc: BlockLocation, record: dict) -> str:
    path = holder_path(run_dir, loc)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path


def read_holder(run_dir: str, loc: BlockLocation) -> dict | None:
    try:
        with open(holder_path(run_dir, loc)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_holder(run_dir: str, loc: BlockLocation, generation: int) -> None:
    rec = read_holder(run_dir, loc)
    if rec is not None and rec.get("generation") == generation:
        try:
            os.unlink(holder_path(run_dir, loc))
        except OSError:
            pass
