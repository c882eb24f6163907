"""tools/manpage.py: diskhb.1 from the click help, a section per command, valid roff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import click
import pytest

from cluster import ROOT
from diskhb.cli import cli
from tools.manpage import esc, walk

MACROS = {".TH", ".SH", ".SS", ".PP", ".TP", ".B", ".nf", ".fi"}


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("man") / "diskhb.1"
    r = subprocess.run([sys.executable, "tools/manpage.py", "-o", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return str(out)


def test_roff_structure_and_a_section_per_command(page):
    text = open(page).read()
    lines = text.splitlines()
    assert lines[0].startswith('.TH DISKHB 1 ')
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "SHELL COMPLETION"):
        assert f".SH {section}" in lines, section
    assert lines[lines.index(".SH NAME") + 1].startswith("diskhb \\- ")
    # every line that starts with a control character is a macro we emit: help text never does
    assert not [x for x in lines if x[:1] in (".", "'") and x.split()[0] not in MACROS]
    root = click.Context(cli, info_name="diskhb")
    paths = [ctx.command_path for cmd, ctx in walk(cli, root) if cmd is not cli]
    assert {"diskhb status", "diskhb run", "diskhb mmp", "diskhb mmp run", "diskhb mmp inspect"} <= set(paths)
    for path in paths:
        assert f'.SS "{esc(path)}"' in lines, path
    assert "\\fB\\-\\-check\\fR" in text and "\\fB\\-V, \\-\\-version\\fR" in text
    assert re.search(r"_DISKHB_COMPLETE=bash_source diskhb", text.replace("\\-", "-"))


def test_escaping():
    assert esc(".hidden") == "\\&.hidden" and esc("'quote") == "\\&'quote"
    assert esc("a\\b --x") == "a\\eb \\-\\-x"


@pytest.mark.skipif(not shutil.which("groff"), reason="groff not installed: the roff structure is checked above")
def test_groff_renders_it_without_a_warning(page):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", page], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = re.sub(r".\x08", "", r.stdout)  # overstrike (bold, underline) as plain text
    assert "diskhb mmp acquire [OPTIONS] RESOURCE" in text and "EXIT STATUS" in text


@pytest.mark.skipif(not shutil.which("man"), reason="man not installed")
def test_man_reads_it(page):
    r = subprocess.run(["man", "-l", page], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"})
    assert r.returncode == 0, r.stderr
    assert "diskhb status [OPTIONS] [PATH]" in re.sub(r".\x08", "", r.stdout)
