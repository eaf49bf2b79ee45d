"""bench.predict_latency at toy sizes: a real server, real requests, the table and both verdicts."""

from __future__ import annotations

from bench import predict_latency


def test_predict_latency_prints_the_floor_the_server_timings_and_both_verdicts(capsys):
    args = ["--model", "simple_cnn", "--image-size", "16", "--requests", "10", "--seconds", "0.3"]
    assert predict_latency.main([*args, "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for row in ("bare forward, batch 32", "one client: p50 / p99", "server model, p50 (Server-Timing)",
                "round trip minus the server's model time", "32 concurrent clients"):  # fmt: skip
        assert row in out
    assert "p50 overhead < 3 ms: " in out
    assert "32 clients >= half the batched floor" in out
