"""Generations in JSON are hex strings (diskhb.core.types.hex_id): exact for every reader."""

import json

import pytest

from diskhb.core.types import hex_id, parse_hex_id

GEN = 6894389468678002730  # the one jq showed as 6894389468678003000


def test_a_json_number_is_rounded_by_a_double_reader_and_a_hex_string_is_not():
    assert json.loads(json.dumps({"g": GEN}), parse_int=float)["g"] != GEN
    text = json.dumps({"g": hex_id(GEN)})
    assert text == '{"g": "0x5fadcab197bf182a"}'
    assert parse_hex_id(json.loads(text, parse_int=float)["g"]) == int(json.loads(text)["g"], 16) == GEN


def test_parse_takes_an_int_from_an_older_daemon_and_refuses_anything_else():
    assert parse_hex_id(GEN) == GEN and parse_hex_id("0X1f") == 31 and parse_hex_id(hex_id(0)) == 0
    for bad in ("123", "", None, True, 1.5, "0xzz"):
        with pytest.raises(ValueError):
            parse_hex_id(bad)
