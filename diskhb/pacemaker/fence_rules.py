"""The fence agent's decisions, free of I/O (diskhb.pacemaker.fence_agent carries them out):
its options and their parsing, its metadata, which diskhb node a Pacemaker plug names, and what
the local daemon's snapshot says of that node's power state and of a fence ordered on it.

Facts of the fence-agent interface (fence-agents' lib/fencing.py, Pacemaker's fencer) followed
here: options come as `key=value` lines on stdin (Pacemaker) or as getopt options on the
command line; `port` is the old name of `plug`, and Pacemaker also passes `nodename` (the local
node); `action=metadata` prints a <resource-agent> document valid against fence-agents'
metadata.rng; `list` prints one `plug<separator>alias` line per target; `status` exits 0 for ON,
2 for OFF, 1 for an error; every other failure exits 1 (never 2: that would read as OFF).

What ON and OFF mean for diskhb (PW1-PW4):
  PW1 OFF: the node's current incarnation (node id, generation) is verified fenced: the local
      daemon's fencing list shows it `fenced` (a verified pill, a self-fence deadline passed, the
      victim's own SELF_FENCED + READ_ONLY beat), or its newest beat carries SELF_FENCED and
      READ_ONLY (fencing FD8: it stopped every guarded resource and no write of it can still land).
  PW2 ON: any other incarnation the daemon has seen: alive, and also dead or silent but not
      verified fenced (it may still be running and writing: claiming OFF would be a lie).
  PW3 unknown: a node the daemon has never seen (no incarnation to fence): status fails (1).
  PW4 an `off` succeeds only on PW1 for the generation the fence was ordered on (a node that
      restarted meanwhile is a new incarnation, not proof that the old one stopped).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

AGENT = "fence_diskhb"
DEFAULT_CONFIG = "/etc/diskhb/diskhb.toml"
POWER_TIMEOUT_S_DEFAULT = 60
POWER_TIMEOUT_S_MAX = 3600
DELAY_S_MAX = 3600
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_OFF = 2  # `status` only

ACTIONS = ("on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata", "validate-all")
NEED_PLUG = ("on", "off", "reboot", "status")
NEED_DAEMON = ("on", "off", "reboot", "status", "list", "list-status", "monitor")


class UsageError(ValueError):
    """Bad input: one line for the operator (exit 1)."""


@dataclass(frozen=True, slots=True)
class Opt:
    key: str  # the stdin name (and the metadata's parameter name)
    short: str  # getopt letter, "" for none
    long: str  # getopt long name
    kind: str  # string | second | integer | boolean
    default: str | None
    required: bool
    mixed: str  # how the command line spells it, for the metadata
    shortdesc: str
    deprecated_for: str = ""  # an old name of another key


OPTIONS: tuple[Opt, ...] = (
    Opt("action", "o", "action", "string", "reboot", True, "-o, --action=[action]",
        "Fencing action (off, reboot, status, list, monitor, on, metadata, validate-all)"),
    Opt("plug", "n", "plug", "string", None, True, "-n, --plug=[node]",
        "The node to fence: its diskhb node name ([node] name, as Pacemaker names the node) or its node id"),
    Opt("port", "", "", "string", None, True, "-n, --plug=[node]",
        "The node to fence (old name of plug)", deprecated_for="plug"),
    Opt("config", "", "config", "string", DEFAULT_CONFIG, False, "--config=[file]",
        "This node's diskhb config: it names the local daemon that fences"),
    Opt("power_timeout", "", "power-timeout", "second", str(POWER_TIMEOUT_S_DEFAULT), False,
        "--power-timeout=[seconds]",
        "Seconds an off waits for the fence to be verified (keep pcmk_off_timeout above it)"),
    Opt("delay", "", "delay", "second", "0", False, "--delay=[seconds]",
        "Wait X seconds before fencing is started"),
    Opt("separator", "C", "separator", "string", ",", False, "-C, --separator=[char]",
        "Separator for CSV created by 'list' operation"),
    Opt("verbose", "v", "verbose", "boolean", None, False, "-v, --verbose",
        "Verbose mode: progress lines on stderr"),
    Opt("quiet", "q", "quiet", "boolean", None, False, "-q, --quiet",
        "Disable logging to stderr (errors are still printed)"),
    Opt("version", "V", "version", "boolean", None, False, "-V, --version", "Display version information and exit"),
    Opt("help", "h", "help", "boolean", None, False, "-h, --help", "Display help and exit"),
)
BY_KEY = {o.key: o for o in OPTIONS}
IGNORED_KEYS = ("nodename",)  # Pacemaker passes the local node's name; nothing to do with it here
TRUE = ("1", "yes", "on", "true")
FALSE = ("0", "no", "off", "false")


def parse_stdin(text: str) -> tuple[dict[str, str], list[str]]:
    """key=value lines (fence-agents' stdin protocol) -> (options, warnings). `#` comments and
    blank lines are skipped, surrounding double quotes dropped, `-` and `_` interchangeable."""
    opts: dict[str, str] = {}
    warnings: list[str] = []
    for raw in text.splitlines()[:1000]:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().replace("-", "_")
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        if name in IGNORED_KEYS:
            continue
        o = BY_KEY.get(name)
        if o is None or not sep:
            warnings.append(f"ignoring unknown option {line[:80]!r}" if o is None else
                            f"ignoring option {name!r} without a value")
            continue
        if o.kind == "boolean":
            if value.lower() in TRUE:
                value = "1"
            elif value.lower() in FALSE:
                value = "0"
            else:
                warnings.append(f"ignoring option {name!r}: {value!r} is not a boolean")
                continue
        opts[o.deprecated_for or name] = value
    return opts, warnings


def getopt_spec() -> tuple[str, list[str]]:
    short = "".join(o.short + ("" if o.kind == "boolean" else ":") for o in OPTIONS if o.short)
    long = [o.long + ("" if o.kind == "boolean" else "=") for o in OPTIONS if o.long]
    return short, long


def from_getopt(pairs: list[tuple[str, str]]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for flag, value in pairs:
        o = next(o for o in OPTIONS if flag in (f"-{o.short}" if o.short else "", f"--{o.long}" if o.long else ""))
        opts[o.deprecated_for or o.key] = "1" if o.kind == "boolean" else value
    return opts


@dataclass(frozen=True, slots=True)
class Request:
    action: str
    plug: str | None
    config: str
    power_timeout_s: int
    delay_s: int
    separator: str
    verbose: bool
    quiet: bool


def check(opts: dict[str, str]) -> Request:
    """Options -> a Request, or UsageError (one line). The plug is checked for form only: which
    node it names is the daemon's to say."""
    action = opts.get("action", "reboot").strip().lower()
    if action == "meta-data":  # the OCF spelling
        action = "metadata"
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    plug = opts.get("plug")
    if plug is not None:
        plug = plug.strip()
        if not plug or any(c.isspace() or c == "," for c in plug) or not plug.isprintable() or len(plug) > 64:
            raise UsageError(f"plug {opts['plug']!r}: a node name or id (printable, no spaces or commas,"
                             " at most 64 characters)")
    if action in NEED_PLUG and not plug:
        raise UsageError(f"action {action} needs the node to act on: plug=NODE (or -n NODE)")
    config = opts.get("config", DEFAULT_CONFIG)
    if not config:
        raise UsageError("config: give the path of this node's diskhb config")
    separator = opts.get("separator", ",")
    if len(separator) != 1:
        raise UsageError(f"separator {separator!r}: one character")
    return Request(action=action, plug=plug, config=config,
                   power_timeout_s=_seconds(opts, "power_timeout", 1, POWER_TIMEOUT_S_MAX),
                   delay_s=_seconds(opts, "delay", 0, DELAY_S_MAX), separator=separator,
                   verbose=opts.get("verbose") == "1", quiet=opts.get("quiet") == "1")


def _seconds(opts: dict[str, str], key: str, low: int, high: int) -> int:
    raw = opts.get(key, BY_KEY[key].default or "0").strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise UsageError(f"{key} {raw!r}: whole seconds, {low}..{high}")
    return int(raw)


# -- metadata ------------------------------------------------------------------------------------------

LONGDESC = (
    "fence_diskhb fences a node through the local diskhb daemon (disk heartbeat and shared-storage"
    " arbitration), with the fencing methods and the quorum rules of the daemon's config: the disk"
    " poison pill (the victim fences itself: every guarded resource stopped, its block devices set"
    " read-only, its watchdog no longer fed) and, when a victim cannot read the pill, its self-fence"
    " deadline under the cluster watchdog. off and reboot succeed only once the daemon has verified"
    " the fence of the node's current incarnation (its SELF_FENCED and READ_ONLY beat, or its deadline"
    " passed); a daemon without quorum fences nobody. on cannot restart a node: it succeeds only if the"
    " node is seen alive. The plug is the node's diskhb name ([node] name) or id."
)


def metadata_xml() -> str:
    """The agent's metadata (fence-agents' metadata.rng: what Pacemaker's fencer reads)."""
    out = ['<?xml version="1.0" ?>',
           f'<resource-agent name="{AGENT}" shortdesc="Fence agent for diskhb (disk heartbeat: poison pill,'
           ' self-fencing)" >',
           f"<longdesc>{escape(LONGDESC)}</longdesc>",
           "<vendor-url></vendor-url>",
           "<parameters>"]
    for o in OPTIONS:
        extra = ' deprecated="1"' if o.deprecated_for else ' obsoletes="port"' if o.key == "plug" else ""
        out.append(f'\t<parameter name="{o.key}" unique="0" required="{int(o.required)}"{extra}>')
        out.append(f"\t\t<getopt mixed={quoteattr(o.mixed)} />")
        default = f" default={quoteattr(o.default)}" if o.default is not None else ""
        out.append(f'\t\t<content type="{o.kind}"{default} />')
        out.append(f'\t\t<shortdesc lang="en">{escape(o.shortdesc)}</shortdesc>')
        out.append("\t</parameter>")
    out.append("</parameters>")
    out.append("<actions>")
    out.append('\t<action name="on" automatic="0"/>')
    out.extend(f'\t<action name="{a}" />' for a in ACTIONS if a != "on")
    out.append("</actions>")
    out.append("</resource-agent>")
    return "\n".join(out) + "\n"


USAGE = f"""Usage: {AGENT} [options]   (or options as key=value lines on stdin)
Options:
   -o, --action=[action]     off, reboot (default), status, list, list-status, monitor, on,
                             metadata, validate-all
   -n, --plug=[node]         the node: its diskhb name or node id
   --config=[file]           this node's diskhb config [default: {DEFAULT_CONFIG}]
   --power-timeout=[seconds] how long off waits for the fence to be verified [default: {POWER_TIMEOUT_S_DEFAULT}]
   --delay=[seconds]         wait before fencing [default: 0]
   -C, --separator=[char]    list's separator [default: ,]
   -v, --verbose / -q, --quiet / -V, --version / -h, --help
Exit codes: 0 done (off: the fence was verified); 1 failed or bad input; status: 0 ON, 2 OFF.
"""


# -- the daemon's snapshot -----------------------------------------------------------------------------


def generation(value) -> int:
    """A generation as the snapshot gives it: an int, or a hex string ("0x...")."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return 0
    return 0


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    name: str
    generation: int
    state: str
    flags: tuple[str, ...]
    is_self: bool


def nodes(snapshot: dict) -> list[Node]:
    out = []
    for n in snapshot.get("nodes") or []:
        if not isinstance(n, dict) or not isinstance(n.get("id"), int):
            continue
        out.append(Node(n["id"], str(n.get("name") or ""), generation(n.get("generation")), str(n.get("state")),
                        tuple(n.get("flags") or ()), bool(n.get("self"))))
    return out


def resolve(plug: str, snapshot: dict) -> Node:
    """PW3: the node `plug` names (a diskhb node name or id) among those the daemon has seen."""
    known = nodes(snapshot)
    if plug.isdigit():
        match = [n for n in known if n.id == int(plug)]
    else:
        match = [n for n in known if n.name == plug]
        if len(match) > 1:
            raise UsageError(f"plug {plug!r}: several nodes use that name (ids {', '.join(str(n.id) for n in match)});"
                             " give the node id, or fix their [node] name")
    if not match or match[0].generation == 0:
        names = ", ".join(f"{n.name or '?'} (id {n.id})" for n in known if n.generation) or "none"
        raise UsageError(f"plug {plug!r}: no such node has been seen by this node's daemon (known: {names});"
                         " the plug is a diskhb [node] name or id")
    return match[0]


def _fence_row(snapshot: dict, node_id: int, gen: int) -> dict | None:
    for row in snapshot.get("fencing") or []:
        if isinstance(row, dict) and row.get("node") == node_id and generation(row.get("generation")) == gen:
            return row
    return None


def _self_fenced(node: Node) -> bool:
    return "self_fenced" in node.flags and "read_only" in node.flags  # FD8


def power(node: Node, snapshot: dict) -> tuple[str, str]:
    """PW1/PW2: ("on" | "off", why)."""
    if node.is_self:
        return "on", "this node (its daemon answers)"
    row = _fence_row(snapshot, node.id, node.generation)
    if row is not None and row.get("fenced"):
        return "off", f"fenced (generation {node.generation:#x}): {row.get('last') or 'verified'}"
    if _self_fenced(node):
        return "off", f"fenced itself (generation {node.generation:#x}: SELF_FENCED, READ_ONLY)"
    if node.state == "alive":
        return "on", f"alive (generation {node.generation:#x})"
    return "on", (f"{node.state} but not verified fenced (generation {node.generation:#x}): it may still be"
                  " running")


@dataclass(frozen=True, slots=True)
class Progress:
    done: bool  # verified (PW4)
    failed: bool  # the attempt ended without a fence: no use waiting
    text: str


def fence_progress(node_id: int, gen: int, snapshot: dict) -> Progress:
    """PW4: where a fence ordered on (node_id, gen) stands in the daemon's snapshot."""
    node = next((n for n in nodes(snapshot) if n.id == node_id), None)
    row = _fence_row(snapshot, node_id, gen)
    if row is not None and row.get("fenced"):
        return Progress(True, False, f"node {node_id} (generation {gen:#x}) fenced: {row.get('last') or 'verified'}")
    if node is not None and node.generation == gen and _self_fenced(node):
        return Progress(True, False, f"node {node_id} (generation {gen:#x}) fenced itself (SELF_FENCED, READ_ONLY)")
    if node is not None and node.generation not in (gen, 0):
        return Progress(False, True, f"node {node_id} restarted as generation {node.generation:#x} before the fence"
                                     f" of generation {gen:#x} was verified")
    if row is None:
        return Progress(False, True, f"the daemon has no fence of node {node_id} (generation {gen:#x}) any more")
    if not row.get("in_flight"):
        return Progress(False, True, f"node {node_id}: {row.get('last') or 'the attempt ended unverified'}")
    return Progress(False, False, f"node {node_id}: {row.get('pending') or row.get('last') or 'in progress'}")


def list_lines(snapshot: dict, separator: str, with_status: bool) -> list[str]:
    """`list`: every node this daemon could fence (seen, not itself): name<sep>id[<sep>ON|OFF]."""
    lines = []
    for n in nodes(snapshot):
        if n.is_self or n.generation == 0:
            continue
        line = f"{n.name or n.id}{separator}{n.id}"
        if with_status:
            line += separator + power(n, snapshot)[0].upper()
        lines.append(line)
    return lines
