"""What the network and serial regions share: signed packets checked by a netpath Receiver.

Both carry netpath.wire packets under the keys of one key file, so both answer the same
questions the daemon and status ask (peers' views, rejected packets) and reload their keys the
same way on SIGHUP (rotation, see netpath.keys).
"""

from __future__ import annotations

import logging

from diskhb.regions.base import Region
from netpath import wire
from netpath.keys import KeyRing, load_key_file
from netpath.receiver import Receiver

log = logging.getLogger("diskhb.regions")


class SignedRegion(Region):
    key_path: str
    keys: KeyRing | None = None
    receiver: Receiver | None = None

    @property
    def views(self) -> dict[int, dict[str, tuple[int, ...]]]:
        """Per peer node: its view (its region name -> node ids it sees alive) from its last beat."""
        return self.receiver.views if self.receiver else {}

    @property
    def rejected(self) -> dict[str, int]:
        """Dropped packets by reason (netpath.wire.REASONS), since start."""
        return self.receiver.rejected if self.receiver else {r: 0 for r in wire.REASONS}

    def reload_keys(self) -> None:
        """Re-read the key file (rotation). On any problem the old keys stay and OperatorError says why."""
        keys = load_key_file(self.key_path)
        self.keys = keys
        if self.receiver:
            self.receiver.keys = keys
        log.info("region %s: keys %s loaded, signing with %d", self.name, ",".join(map(str, keys.ids)),
                 keys.signing_id)
