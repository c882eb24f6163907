"""Heartbeat authentication keys: the key file, its permission rule, and key generation.

Key file format (text, at most KEY_FILE_BYTES_MAX bytes):

    # comments and blank lines are ignored
    <key id> <64 hex digits>
    [<key id> <64 hex digits>]

- key id: decimal 1..65535; a key: 32 random bytes (HMAC-SHA256's full strength).
- The FIRST key signs what we send; every listed key (at most KEYS_MAX = 2) is accepted.
- The file must be a regular file owned by root or by the user running the daemon, with no
  group or other permission bits (0600 or 0400): Heartbeat's authkeys rule. Anyone who can read
  it can forge heartbeats, so a readable key file is refused, not warned about.

Rotation without downtime (one step at a time on every node; each step is safe with any mix of
nodes on the previous or the next step):
  1. `diskhb keygen /tmp/new --key-id 2` on one node; append its key line to every node's key
     file as the SECOND line (now accepted everywhere, still signed with the old key);
  2. swap the two lines on every node (now signed with the new key, the old one still accepted);
  3. delete the old line everywhere.
A daemon picks up its edited file on SIGHUP (`kill -HUP PID`; a bad file keeps the old keys). Rotating also ends the
usefulness of any recorded traffic signed with the old key (see netpath.replay).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass

from diskhb.errors import OperatorError

KEY_BYTES = 32
KEYS_MAX = 2
KEY_ID_MIN, KEY_ID_MAX = 1, 0xFFFF
KEY_FILE_BYTES_MAX = 4096
_LINE = re.compile(r"^(\d{1,5})\s+([0-9a-fA-F]+)$")


@dataclass(frozen=True)
class KeyRing:
    """Keys by id; `signing_id` is the first key of the file. Never print the keys themselves."""

    signing_id: int
    keys: dict[int, bytes]

    def __post_init__(self):
        assert 1 <= len(self.keys) <= KEYS_MAX and self.signing_id in self.keys
        assert all(len(k) == KEY_BYTES and KEY_ID_MIN <= i <= KEY_ID_MAX for i, k in self.keys.items())

    def key(self, key_id: int) -> bytes | None:
        return self.keys.get(key_id)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(self.keys)

    def fingerprint(self, key_id: int) -> str:
        """8 hex digits that identify a key in logs without revealing it."""
        return hashlib.sha256(b"diskhb key fingerprint\0" + self.keys[key_id]).hexdigest()[:8]


def parse_keys(text: str, where: str = "key file") -> KeyRing:
    """Parse key file text; OperatorError naming the line on any mistake."""
    keys: dict[int, bytes] = {}
    first: int | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise OperatorError(f'{where}:{lineno}: expected "<key id> <{2 * KEY_BYTES} hex digits>";'
                                " generate one with diskhb keygen")
        key_id, hexkey = int(m.group(1)), m.group(2)
        if not KEY_ID_MIN <= key_id <= KEY_ID_MAX:
            raise OperatorError(f"{where}:{lineno}: key id {key_id} not in {KEY_ID_MIN}..{KEY_ID_MAX}")
        if len(hexkey) != 2 * KEY_BYTES:
            raise OperatorError(f"{where}:{lineno}: key is {len(hexkey) // 2} bytes, must be {KEY_BYTES}"
                                f" ({2 * KEY_BYTES} hex digits); generate one with diskhb keygen")
        if key_id in keys:
            raise OperatorError(f"{where}:{lineno}: key id {key_id} listed twice; give each key its own id")
        if len(keys) == KEYS_MAX:
            raise OperatorError(f"{where}:{lineno}: more than {KEYS_MAX} keys; keep the signing key"
                                " and at most one other (rotation)")
        keys[key_id] = bytes.fromhex(hexkey)
        if first is None:
            first = key_id
    if first is None:
        raise OperatorError(f"{where}: no key in the file; generate one with diskhb keygen")
    return KeyRing(first, keys)


def load_key_file(path: str) -> KeyRing:
    """Read and check a key file (owner, mode, type, size, format). One-line OperatorError."""
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the daemon's start.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise OperatorError(f"key file {path}: not found; create it with diskhb keygen {path}") from None
    except OSError as e:
        raise OperatorError(f"key file {path}: cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the path points to a moment later
        if not stat.S_ISREG(st.st_mode):
            raise OperatorError(f"key file {path}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise OperatorError(f"key file {path}: owned by uid {st.st_uid}; it must belong to root"
                                f" or to the daemon's user (chown root {path})")
        if st.st_mode & 0o077:
            raise OperatorError(f"key file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it;"
                                f" run chmod 600 {path} (and consider the key compromised)")
        if st.st_size > KEY_FILE_BYTES_MAX:
            raise OperatorError(f"key file {path}: {st.st_size} bytes is too large for a key file"
                                f" (at most {KEY_FILE_BYTES_MAX})")
        data = os.read(fd, KEY_FILE_BYTES_MAX + 1)
    except OSError as e:
        raise OperatorError(f"key file {path}: cannot read ({e.strerror})") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise OperatorError(f"key file {path}: not a text key file; generate one with diskhb keygen") from None
    return parse_keys(text, f"key file {path}")


def format_key_line(key_id: int, key: bytes) -> str:
    assert KEY_ID_MIN <= key_id <= KEY_ID_MAX and len(key) == KEY_BYTES
    return f"{key_id} {key.hex()}\n"


def generate_key_file(path: str, key_id: int = 1) -> str:
    """Write a new key file (mode 0600) with one fresh random key; never overwrites.

    Returns the key's fingerprint (for the operator to compare across nodes).
    """
    if not KEY_ID_MIN <= key_id <= KEY_ID_MAX:
        raise OperatorError(f"key id {key_id} not in {KEY_ID_MIN}..{KEY_ID_MAX}")
    key = secrets.token_bytes(KEY_BYTES)
    text = ("# diskhb heartbeat key file: '<key id> <hex key>' per line; the first key signs,\n"
            "# all listed keys (at most 2) are accepted. Keep it mode 0600; copy it to every node.\n"
            + format_key_line(key_id, key))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise OperatorError(f"{path}: already exists; remove it first or pick another path"
                            " (to rotate keys, generate into a new file and append its key line)") from None
    except OSError as e:
        raise OperatorError(f"{path}: cannot create key file ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; make the mode exact anyway
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise OperatorError(f"{path}: cannot write key file ({e.strerror})") from None
    os.close(fd)
    ring = parse_keys(text)  # validate what we wrote with the reader's rules
    assert ring.key(key_id) == key
    return ring.fingerprint(key_id)
