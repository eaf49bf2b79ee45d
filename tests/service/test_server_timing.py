"""The Server-Timing header: written by the /predict route, read back by the benchmark."""

from __future__ import annotations

import time

from service.server_timing import ServerTiming, parse_server_timing


def test_each_name_adds_up_its_spans_and_total_comes_last():
    timing = ServerTiming()
    for _ in range(2):
        with timing("prepare"):
            time.sleep(0.002)
    header = timing.header()
    parsed = parse_server_timing(header)
    assert list(parsed) == ["prepare", "total"]
    assert parsed["prepare"] >= 4.0  # two spans of 2 ms
    assert parsed["total"] >= parsed["prepare"]


def test_parse_skips_entries_without_a_duration():
    assert parse_server_timing('cache;desc="hit", db;dur=53.2, app;dur=47') == {"db": 53.2, "app": 47.0}
    assert parse_server_timing("") == {}
