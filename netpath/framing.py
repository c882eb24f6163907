"""Serial framing: self-synchronising frames over a byte stream (COBS, 0x00 delimiters, CRC-32C).

Rules of this file:
- A frame on the line is  0x00 COBS(payload + crc32c(payload) as 4 bytes little-endian) 0x00.
  COBS leaves no 0x00 inside a frame, so the receiver resynchronises at the next 0x00 after any
  garbage, a cut frame or a replugged cable. The leading 0x00 makes garbage before a frame cost
  only the garbage, not the frame after it; empty chunks between delimiters are ignored.
- The CRC catches line noise cheaply before the HMAC (netpath.wire) authenticates the payload.
- Bounded: a chunk without a delimiter longer than FRAME_BYTES_MAX is discarded up to the next
  delimiter (reported once as "oversize"); `FrameReader.feed` never raises.
"""

from __future__ import annotations

import crc32c

from netpath.wire import PACKET_BYTES_MAX

CRC_BYTES = 4
DELIMITER = b"\x00"


def cobs_max_bytes(n: int) -> int:
    return n + n // 254 + 1


FRAME_BYTES_MAX = cobs_max_bytes(PACKET_BYTES_MAX + CRC_BYTES)  # between delimiters


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00."""
    out = bytearray()
    for block in data.split(b"\x00"):
        while len(block) >= 254:
            out.append(255)
            out += block[:254]
            block = block[254:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    """Inverse of cobs_encode; ValueError on anything cobs_encode could not have produced."""
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            raise ValueError("0x00 inside a frame")
        j = i + code
        if j > n:
            raise ValueError("block runs past the frame")
        out += enc[i + 1 : j]
        i = j
        if code < 255 and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    assert len(payload) <= PACKET_BYTES_MAX
    body = payload + crc32c.crc32c(payload).to_bytes(CRC_BYTES, "little")
    frame = DELIMITER + cobs_encode(body) + DELIMITER
    assert len(frame) <= FRAME_BYTES_MAX + 2
    return frame


def decode_frame(chunk: bytes) -> bytes | str:
    """The payload of one chunk between delimiters, or a rejection reason. Never raises."""
    try:
        body = cobs_decode(chunk)
    except ValueError:
        return "framing"
    if len(body) <= CRC_BYTES:
        return "framing"
    payload, crc = body[:-CRC_BYTES], body[-CRC_BYTES:]
    if crc32c.crc32c(payload).to_bytes(CRC_BYTES, "little") != crc:
        return "crc"
    return payload


class FrameReader:
    """Splits a byte stream into frame payloads (bytes) and rejection reasons (str)."""

    def __init__(self):
        self._buf = bytearray()
        self._discarding = False  # inside an overlong chunk: drop bytes up to the next delimiter

    def reset(self) -> None:
        """Forget a partial frame (after the device was reopened: its start is gone)."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | str]:
        out: list[bytes | str] = []
        start = 0
        while True:
            i = data.find(DELIMITER, start)
            if i < 0:
                if not self._discarding:
                    self._buf += data[start:]
                    if len(self._buf) > FRAME_BYTES_MAX:
                        self._buf.clear()
                        self._discarding = True
                        out.append("oversize")
                return out
            if self._discarding:
                self._discarding = False  # the overlong chunk ends here; it was reported already
            else:
                chunk = bytes(self._buf) + data[start:i]
                self._buf.clear()
                if len(chunk) > FRAME_BYTES_MAX:
                    out.append("oversize")
                elif chunk:
                    out.append(decode_frame(chunk))
            start = i + 1
