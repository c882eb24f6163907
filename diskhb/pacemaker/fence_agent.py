"""fence_diskhb: the Pacemaker fence agent of diskhb (installed as /usr/sbin/fence_diskhb).

It fences through this node's diskhb daemon (its control socket, named by the node's config):
the daemon fences with the methods and under the quorum rules of its config (fencing FD10: an
operator's order; refused without quorum), and an `off` returns 0 only once the daemon's status
shows the node's incarnation verified fenced (diskhb.pacemaker.fence_rules PW1-PW4), within
power_timeout. `on` cannot power a node on: a fenced node rejoins when an operator restarts its
daemon (after its watchdog reset it); `on` succeeds only when the node is seen alive. `reboot`
is `off`: the victim stops its guarded storage (and, with a watchdog, is reset); it is never
brought back by us. Every failure is one line on stderr and exit 1; nothing is ordered before
the options, the config, the daemon and the node have been checked.

    echo -e 'action=off\\nplug=oss2' | fence_diskhb      # what Pacemaker's fencer does
    fence_diskhb -o status -n oss2 --config /etc/diskhb/diskhb.toml
"""

from __future__ import annotations

import getopt
import os
import sys
import time

from diskhb.pacemaker import fence_rules as fr

POLL_S = 0.25


class Failed(Exception):
    """A failed action: one line, exit 1."""


class Agent:
    def __init__(self, req: fr.Request, say_err, say_out):
        self.req = req
        self.err = say_err
        self.out = say_out
        self._sock: str | None = None

    def info(self, text: str) -> None:
        if self.req.verbose and not self.req.quiet:
            self.err(f"{fr.AGENT}: {text}")

    # -- the daemon ----------------------------------------------------------------------------------

    def config(self):
        from diskhb.config import load_config
        from diskhb.errors import OperatorError

        try:
            cfg = load_config(self.req.config)
        except OperatorError as e:
            raise Failed(str(e)) from None
        if cfg.quorum is None:
            raise Failed(f"{self.req.config}: no [quorum] table: this node's daemon makes no fencing decisions"
                         " and fences nobody; configure [quorum] on every node")
        return cfg

    def socket(self) -> str:
        if self._sock is None:
            from diskhb.control import node_sockets

            cfg = self.config()
            found = [p for p in node_sockets(cfg.node.run_dir, cfg.cluster.name, cfg.node.id) if os.path.exists(p)]
            if len(found) != 1:
                raise Failed(f"no running diskhb daemon of node {cfg.node.id} ({'no' if not found else len(found)}"
                             f" control sockets in {cfg.node.run_dir}): start it, 'systemctl start diskhb'")
            self._sock = found[0]
        return self._sock

    def snapshot(self) -> dict:
        from diskhb.control import STATUS_TIMEOUT_S, ControlError, Status, request

        try:
            snap = request(self.socket(), Status(), STATUS_TIMEOUT_S)
        except ControlError as e:
            raise Failed(f"no answer from this node's diskhb daemon ({e})") from None
        if snap.get("source") != "daemon" or not isinstance(snap.get("nodes"), list):
            raise Failed(f"{self._sock}: not a diskhb daemon's status answer")
        return snap

    # -- actions -------------------------------------------------------------------------------------

    def run(self) -> int:
        a = self.req.action
        if a == "validate-all":
            self.config()
            return fr.EXIT_OK
        if a == "monitor":
            return self.monitor()
        if a in ("list", "list-status"):
            for line in fr.list_lines(self.snapshot(), self.req.separator, a == "list-status"):
                self.out(line)
            return fr.EXIT_OK
        if a == "status":
            node, snap = self.target()
            state, why = fr.power(node, snap)
            self.out(f"Status: {state.upper()}")
            self.info(f"node {node.id} ({node.name}): {why}")
            return fr.EXIT_OK if state == "on" else fr.EXIT_OFF
        if a == "on":
            return self.on()
        return self.off()  # off, reboot

    def target(self) -> tuple[fr.Node, dict]:
        snap = self.snapshot()
        try:
            return fr.resolve(self.req.plug, snap), snap
        except fr.UsageError as e:
            raise Failed(str(e)) from None

    def monitor(self) -> int:
        snap = self.snapshot()
        if snap.get("fencing") is None:
            raise Failed("this node's daemon has no [quorum]: it fences nobody")
        if snap.get("phase") != "running":
            raise Failed(f"this node's daemon is {snap.get('phase')}: it fences nobody")
        q = snap.get("quorum") or {}
        self.info(f"daemon answers (node {snap['node']['id']}), {'quorate' if q.get('quorate') else 'NOT quorate'}")
        return fr.EXIT_OK

    def on(self) -> int:
        node, snap = self.target()
        state, why = fr.power(node, snap)
        if state == "on" and node.state == "alive":
            self.out(f"Success: Already ON (node {node.id} {node.name}: {why})")
            return fr.EXIT_OK
        raise Failed(f"node {node.id} ({node.name}) is {why}; diskhb cannot turn a node on: it rejoins when an"
                     " operator restarts its diskhb daemon (and Pacemaker)")

    def off(self) -> int:
        from diskhb.control import STATUS_TIMEOUT_S, ControlError, FenceNode, request

        node, snap = self.target()
        if node.is_self:
            raise Failed(f"plug {self.req.plug!r} is this node: its own daemon does not fence it (fence it from"
                         " another node)")
        state, why = fr.power(node, snap)
        if state == "off":
            self.out(f"Success: Already OFF (node {node.id} {node.name}: {why})")
            return fr.EXIT_OK
        if self.req.delay_s:
            self.info(f"waiting {self.req.delay_s} s before fencing (delay)")
            time.sleep(self.req.delay_s)
        try:
            answer = request(self.socket(), FenceNode(node.id, False), STATUS_TIMEOUT_S * 2)
        except ControlError as e:
            raise Failed(f"no answer from this node's diskhb daemon to the fence order ({e}); see 'diskhb"
                         " status' for whether it was ordered") from None
        if answer.get("ok"):
            gen = fr.generation(answer.get("generation"))
            self.info(f"fence of node {node.id} (generation {gen:#x}) ordered: attempt {answer.get('attempt')}")
        else:
            # Refused: fenced already, in progress, not quorate, ... The status decides, not the words:
            # a fence of the current incarnation already done or under way is waited on; else fail.
            snap = self.snapshot()
            now = next((n for n in fr.nodes(snap) if n.id == node.id), node)
            progress = fr.fence_progress(node.id, now.generation, snap)
            if progress.done:
                self.out(f"Success: {progress.text}")
                return fr.EXIT_OK
            if progress.failed:
                raise Failed(f"the daemon refused to fence node {node.id} ({node.name}): {answer.get('error')}")
            gen = now.generation
            self.info(f"a fence of node {node.id} is under way: {progress.text}")
        deadline = time.monotonic() + self.req.power_timeout_s
        last = f"node {node.id}: ordered"
        while True:
            try:
                progress = fr.fence_progress(node.id, gen, self.snapshot())
            except Failed as e:  # a busy daemon: look again until the deadline
                progress = fr.Progress(False, False, str(e))
            if progress.done:
                tail = (" (reboot: the node is not brought back; it rejoins when its daemon is restarted)"
                        if self.req.action == "reboot" else "")
                self.out(f"Success: {progress.text}{tail}")
                return fr.EXIT_OK
            if progress.failed:
                raise Failed(f"fence of node {node.id} ({node.name}) not verified: {progress.text}")
            if progress.text != last:
                self.info(progress.text)
                last = progress.text
            if time.monotonic() >= deadline:
                raise Failed(f"fence of node {node.id} ({node.name}, generation {gen:#x}) not verified within"
                             f" {self.req.power_timeout_s} s: {progress.text}")
            time.sleep(POLL_S)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("diskhb")
    except Exception:  # not installed as a distribution (a checkout)
        return "unknown"


def main(argv: list[str] | None = None, stdin=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    err = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    out = lambda s: print(s, flush=True)  # noqa: E731
    warnings: list[str] = []
    try:
        if argv:
            short, long = fr.getopt_spec()
            try:
                pairs, rest = getopt.gnu_getopt(argv, short, long)
            except getopt.GetoptError as e:
                raise fr.UsageError(f"{e.msg} (see -h)") from None
            if rest:
                raise fr.UsageError(f"unexpected arguments {' '.join(rest)!r} (see -h)")
            opts = fr.from_getopt(pairs)
        else:
            opts, warnings = fr.parse_stdin((stdin or sys.stdin).read(1 << 20))
        if opts.get("help") == "1":
            out(fr.USAGE.rstrip())
            return fr.EXIT_OK
        if opts.get("version") == "1":
            out(_version())
            return fr.EXIT_OK
        req = fr.check(opts)
    except fr.UsageError as e:
        err(f"{fr.AGENT}: error: {e}")
        return fr.EXIT_ERROR
    if not req.quiet:
        for w in warnings:
            err(f"{fr.AGENT}: warning: {w}")
    if req.action == "metadata":
        sys.stdout.write(fr.metadata_xml())
        sys.stdout.flush()
        return fr.EXIT_OK
    try:
        return Agent(req, err, out).run()
    except Failed as e:
        err(f"{fr.AGENT}: error: {req.action}: {e}")
        return fr.EXIT_ERROR
    except KeyboardInterrupt:
        err(f"{fr.AGENT}: error: {req.action}: interrupted")
        return fr.EXIT_ERROR
    except BrokenPipeError:
        return fr.EXIT_ERROR


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
