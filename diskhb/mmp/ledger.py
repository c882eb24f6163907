"""Our own writes whose outcome we do not know yet, per sector. I/O-free.

Disk Paxos assumes a node's own sector never goes back: no new write to a sector while an older
write of ours to it may still land (schedule D of the issue that introduced this file: an
abandoned attempt's phase-1 write landing after the next attempt chose, erasing its acceptance).
A write we gave up on (its deadline passed) is still in the kernel and may land until F1's bound
(core.timing.write_land_max_ms). So:
  LG1 a sector with a write of ours of unknown outcome is not written again by this process
      until that write completes (its outcome is then known) or write_land_max_ms after its
      issue has passed (it can no longer land);
  LG2 across processes of one node F4 holds (a process with a write in flight cannot exit),
      and the local ballot lock (diskhb.mmp.local) is held by a process until it exits;
  LG3 `unknown()` says whether any write of ours may still land: a daemon with such a write
      must not publish LEFT (peers would take over at once).
  LG4 a write given up on that reaches write_land_max_ms without completing breaks F1 for this
      node: `lapsed_ms` keeps the issue time of the first such write (self-fencing SF4 acts on it;
      the watchdog is what makes F1 true on real hardware).
Bounded: at most WRITES_MAX entries (a process that would exceed it refuses to write).
"""

from __future__ import annotations

WRITES_MAX = 256

SectorKey = tuple[str, int]  # (device, byte offset)


class SectorLedger:
    def __init__(self, write_land_max_ms: int):
        assert write_land_max_ms > 0
        self.write_land_max_ms = write_land_max_ms
        self._unknown: dict[SectorKey, int] = {}  # sector -> issue time of the write given up on
        self.lapsed_ms: int | None = None  # LG4

    def busy_until_ms(self, key: SectorKey, now_ms: int) -> int | None:
        """LG1: None if we may write the sector now, else until when we may not."""
        self._expire(now_ms)
        issued = self._unknown.get(key)
        return None if issued is None else issued + self.write_land_max_ms

    def gave_up(self, key: SectorKey, issued_ms: int, now_ms: int) -> None:
        """A write of ours to `key` passed its deadline without completing."""
        self._expire(now_ms)
        if len(self._unknown) >= WRITES_MAX and key not in self._unknown:
            raise RuntimeError(f"more than {WRITES_MAX} writes of unknown outcome")
        self._unknown[key] = max(issued_ms, self._unknown.get(key, issued_ms))

    def completed(self, key: SectorKey, issued_ms: int) -> None:
        """The write issued at issued_ms completed (ok or failed): its outcome is known."""
        if self._unknown.get(key) == issued_ms:
            del self._unknown[key]

    def take_lapsed(self, now_ms: int) -> int | None:
        """LG4: the issue time of a write that lapsed since the last call (None: none)."""
        self._expire(now_ms)
        lapsed, self.lapsed_ms = self.lapsed_ms, None
        return lapsed

    def unknown(self, now_ms: int) -> list[SectorKey]:
        """LG3: sectors that may still receive a write of ours."""
        self._expire(now_ms)
        return sorted(self._unknown)

    def _expire(self, now_ms: int) -> None:
        if not self._unknown:
            return
        for key, issued in list(self._unknown.items()):
            if now_ms >= issued + self.write_land_max_ms:
                del self._unknown[key]
                if self.lapsed_ms is None:  # LG4
                    self.lapsed_ms = issued
