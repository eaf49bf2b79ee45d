"""bench.predict_abuse at toy sizes: a real server, every scenario, the status each must get, the verdict."""

from __future__ import annotations

from bench import predict_abuse

EXPECTED = {
    "text bombs": "413x2",
    "text at the limits": "200x2",
    "chunk flood": "413x2",
    "large input": "200x2",
    "over the budget": "422x2",
    "largest image": "200x2",
}


def test_predict_abuse_reports_every_scenario_with_its_statuses_memory_and_cpu(capsys):
    args = ["--small-model", "simple_cnn", "--small-size", "16", "--large-model", "simple_cnn"]
    args += ["--large-size", "256", "--concurrency", "2", "--rounds", "1", "--text-files", "4"]
    assert predict_abuse.main([*args, "--largest-pixels", "250000"]) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells for line in out.splitlines() if (cells := [c.strip() for c in line.split("|")[1:-1]])
    }
    assert rows["scenario"][4:7] == ["start MiB", "peak MiB", "CPU s/request"]
    for scenario, statuses in EXPECTED.items():
        assert rows[scenario][3] == statuses, rows[scenario]
        assert float(rows[scenario][6]) >= 0
    assert "peak under 2 concurrent worst-case requests < 1 GiB above idle: PASS" in out
