"""Log lines for journald (diskhb.journald): `<N>LEVEL message` with the syslog priority on every
line and no timestamp of ours when stderr is the journal ($JOURNAL_STREAM names it); the plain,
timestamped format otherwise, unchanged (tools.bench parses its timestamp)."""

from __future__ import annotations

import logging
import os
import re
import sys

import pytest

from diskhb import journald
from tools.bench.failover import _log_time


def record(level: int, msg: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("diskhb", level, __file__, 1, msg, (), exc_info)


@pytest.mark.parametrize("level, prio", [(logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                                         (logging.INFO, 6), (logging.DEBUG, 7), (45, 3), (25, 6), (5, 7), (60, 2)])
def test_levels_map_to_syslog_priorities(level, prio):
    assert journald.priority(level) == prio


def test_a_journal_line_has_the_priority_and_no_timestamp_or_pid():
    f = journald.JournalFormatter()
    assert f.format(record(logging.WARNING, "fencing node 2")) == "<4>WARNING fencing node 2"
    assert f.format(record(logging.INFO, "started")) == "<6>INFO started"


def test_every_line_of_a_multi_line_record_keeps_its_priority():
    f = journald.JournalFormatter()
    assert f.format(record(logging.CRITICAL, "fatal\ntrace 1\ntrace 2")) == "<2>CRITICAL fatal\n<2>trace 1\n<2>trace 2"
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        text = f.format(record(logging.ERROR, "failed", sys.exc_info()))
    lines = text.splitlines()
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines), text
    assert lines[-1] == "<3>RuntimeError: a bug"


def test_stderr_is_the_journal_only_if_journal_stream_names_it(tmp_path):
    with open(tmp_path / "stream", "w") as a, open(tmp_path / "other", "w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journald.stderr_is_journal(env, a.fileno())
        assert not journald.stderr_is_journal(env, b.fileno()), "stderr redirected elsewhere: plain lines"
        for bad in ({}, {"JOURNAL_STREAM": ""}, {"JOURNAL_STREAM": "x:y"}, {"JOURNAL_STREAM": "12"},
                    {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}):
            assert not journald.stderr_is_journal(bad, a.fileno()), bad
        assert isinstance(journald.formatter(env, a.fileno()), journald.JournalFormatter)
        plain = journald.formatter(env, b.fileno())
    line = plain.format(record(logging.WARNING, "fencing node 2"))
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} diskhb\[{os.getpid()}\] WARNING fencing node 2",
                        line), line
    assert abs(_log_time(line) - record(logging.INFO, "").created) < 5, "tools.bench still parses it"
