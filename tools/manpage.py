"""diskhb.1 from the click command tree, so the man page says what --help says.

    python tools/manpage.py [-o diskhb.1]        (make man; make install puts it in MANDIR)

Every command and subcommand gets a section with its usage, its help text and one entry per
option or argument; the text is escaped for roff (backslashes, leading dots, hyphens).
"""

from __future__ import annotations

import argparse
import os
import sys

import click

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a file from the tree

EXIT_STATUS = (
    ("0", "success"),
    ("1", "a safe refusal: a slot or resource in use, existing data found, a check failed"),
    ("2", "bad input: usage, config, an unformatted or corrupt region"),
    ("3", "a safety stop: the daemon stopped itself, or a held MMP resource was lost"),
    ("4", "mmp: the daemon did not answer, the outcome is unknown"),
)


def esc(text: str) -> str:
    """Text for a roff line: backslashes and hyphens escaped, no control character at the start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def paragraphs(help_text: str) -> list[str]:
    """Click's help text as roff paragraphs (a \\b line keeps the next paragraph's lines as they are)."""
    out: list[str] = []
    for block in help_text.strip().split("\n\n"):
        lines = block.split("\n")
        if lines[0].strip() == "\b":
            out.append(".nf\n" + "\n".join(esc(x) for x in lines[1:]) + "\n.fi")
        else:
            out.append(esc(" ".join(x.strip() for x in lines)))
    return out


def command_section(cmd: click.Command, ctx: click.Context) -> list[str]:
    path = ctx.command_path
    lines = [f'.SS "{esc(path)}"', ".nf", esc(" ".join([path] + cmd.collect_usage_pieces(ctx))), ".fi"]
    for p in paragraphs(cmd.help or cmd.short_help or ""):
        lines += [".PP", p]
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Argument) or param.name == "help":
            continue  # arguments have no help of their own (the usage shows them); -h is said once
        record = param.get_help_record(ctx)
        if record is None:
            continue
        opts, text = record
        lines += [".TP", f"\\fB{esc(opts)}\\fR"]
        if text:
            lines.append(esc(text))
    return lines


def walk(cmd: click.Command, ctx: click.Context):
    yield cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


def render(cli: click.Group, version: str) -> str:
    root = click.Context(cli, info_name="diskhb", **cli.context_settings)  # -h, width: as the CLI has them
    first, _, rest = (cli.help or "").strip().partition("\n\n")
    out = [f'.TH DISKHB 1 "" "diskhb {esc(version)}" "User Commands"',
           ".SH NAME", f"diskhb \\- {esc(first.strip().rstrip('.'))}",
           ".SH SYNOPSIS", ".B diskhb", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
           ".SH DESCRIPTION"]
    for p in paragraphs(rest) if rest else []:
        out += [".PP", p]
    out += [".PP", "Every command below prints its own help with \\fB\\-h\\fR."]
    for param in cli.get_params(root):
        record = param.get_help_record(root)
        if record:
            out += [".TP", f"\\fB{esc(record[0])}\\fR", esc(record[1])]
    out.append(".SH COMMANDS")
    for cmd, ctx in walk(cli, root):
        if cmd is not cli:
            out += command_section(cmd, ctx)
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", esc(text)]
    out += [".SH SHELL COMPLETION", "Click's, for bash:", ".PP", ".nf",
            esc('eval "$(_DISKHB_COMPLETE=bash_source diskhb)"'), ".fi", ".PP",
            esc("in ~/.bashrc; zsh_source and fish_source for zsh and fish (make install writes the bash file)."),
            ".SH FILES", ".TP", "\\fI/etc/diskhb.toml\\fR", "the node config (\\fBdiskhb run \\-\\-config\\fR)",
            ".TP", "\\fI/run/diskhb\\fR", "control sockets of running daemons ([node] run_dir)",
            ".SH SEE ALSO", "The README of the diskhb source tree."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="-", help="where to write it [default: stdout]")
    args = ap.parse_args(argv)
    from importlib.metadata import PackageNotFoundError, version

    from diskhb.cli import cli

    try:
        v = version("diskhb")
    except PackageNotFoundError:
        v = "unknown"
    text = render(cli, v)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
