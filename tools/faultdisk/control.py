"""The fault modes and the control-file language (pure: no I/O, shared by the daemon and tests).

    read=ok | read=hang | read=eio | read=slow:<ms>     (same for write=..., all=...)

Several settings may be given at once, separated by spaces, commas, semicolons or newlines
("read=eio write=slow:200"). A text with any bad token changes nothing (all or none).
Reading the control file gives one line of key=value pairs: the modes and counters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("read", "write")
SLOW_MS_MAX = 600_000  # a "slow" request waits at most 10 minutes: anything longer is a hang
CONTROL_BYTES_MAX = 4096  # one control write; more is a mistake, not a command


@dataclass(frozen=True, slots=True)
class Mode:
    kind: str  # ok | hang | eio | slow
    delay_ms: int = 0  # slow only

    def __str__(self) -> str:
        return f"slow:{self.delay_ms}" if self.kind == "slow" else self.kind


OK = Mode("ok")
HANG = Mode("hang")
EIO = Mode("eio")


class ControlError(ValueError):
    pass


def parse_mode(text: str) -> Mode:
    text = text.strip().lower()
    if text in ("ok", "hang", "eio"):
        return Mode(text)
    m = re.fullmatch(r"slow:(\d{1,7})", text)
    if m:
        ms = int(m.group(1))
        if ms > SLOW_MS_MAX:
            raise ControlError(f"slow:{ms}: at most {SLOW_MS_MAX} ms (use hang for longer)")
        return Mode("slow", ms)
    raise ControlError(f"unknown mode {text!r}: use ok, hang, eio or slow:<ms>")


def parse_control(text: str) -> dict[str, Mode]:
    """'write=hang read=ok' -> {'write': HANG, 'read': OK}; ControlError on any bad token."""
    if len(text) > CONTROL_BYTES_MAX:
        raise ControlError(f"control text longer than {CONTROL_BYTES_MAX} bytes")
    changes: dict[str, Mode] = {}
    tokens = [t for t in re.split(r"[\s,;]+", text) if t]
    if not tokens:
        raise ControlError("empty control text: write e.g. 'write=hang' or 'all=ok'")
    for tok in tokens:
        key, sep, value = tok.partition("=")
        key = key.lower()
        if not sep or key not in (*KINDS, "all"):
            raise ControlError(f"bad setting {tok!r}: use read=MODE, write=MODE or all=MODE")
        mode = parse_mode(value)
        for k in KINDS if key == "all" else (key,):
            changes[k] = mode
    return changes


def format_control(read: str | Mode | None = None, write: str | Mode | None = None,
                   all: str | Mode | None = None) -> str:  # noqa: A002 - mirrors the language
    """Keyword arguments -> control text (validated here, so a typo fails in the caller)."""
    parts = []
    for key, value in (("all", all), ("read", read), ("write", write)):
        if value is not None:
            parts.append(f"{key}={parse_mode(str(value))}")
    if not parts:
        raise ControlError("nothing to set: give read=, write= or all=")
    return " ".join(parts) + "\n"


def parse_state(text: str) -> dict[str, str | int]:
    """The control file's one line -> {'read': 'ok', 'write': 'hang', 'hung_write': 1, ...}."""
    out: dict[str, str | int] = {}
    for tok in text.split():
        key, _, value = tok.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out
