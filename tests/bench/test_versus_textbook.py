"""bench/versus_textbook.py's verdicts say what issue 15's targets say, and --quick is one point."""

from __future__ import annotations

import json

from bench.versus_textbook import grid_points, parse, verdict

TEXTBOOK = {"process_seconds": 60.0, "images_per_second": 100.0}


def ours(process_seconds: float, images_per_second: float) -> dict:
    return {"process_seconds": process_seconds, "images_per_second": images_per_second}


def test_a_point_passes_at_1_2x_on_both_measures():
    assert verdict("full", 2, ours(50.0, 120.0), TEXTBOOK, gpu=False)["result"] == "PASS"


def test_a_point_slower_whole_process_fails_even_when_training_is_faster():
    assert verdict("full", 2, ours(55.0, 300.0), TEXTBOOK, gpu=False)["result"] == "FAIL"


def test_linear_must_also_reach_0_8_x_epochs_in_training():
    assert verdict("linear", 3, ours(30.0, 230.0), TEXTBOOK, gpu=False)["result"] == "FAIL"
    assert verdict("linear", 3, ours(30.0, 250.0), TEXTBOOK, gpu=False)["result"] == "PASS"


def test_on_a_gpu_partial_and_full_need_5x():
    assert verdict("partial", 2, ours(11.0, 600.0), TEXTBOOK, gpu=True)["result"] == "PASS"
    assert verdict("partial", 2, ours(13.0, 600.0), TEXTBOOK, gpu=True)["result"] == "FAIL"


def test_quick_is_one_point_and_the_grid_is_every_combination():
    assert grid_points(parse(["--quick"])) == [(32, 1000, "linear")]
    assert len(grid_points(parse([]))) == 27


def test_the_grid_runs_cheapest_first_so_a_stopped_run_keeps_the_most_points():
    points = grid_points(parse([]))
    assert points[:3] == [(32, 1000, "linear"), (32, 1000, "partial"), (32, 1000, "full")]
    assert points[-1] == (96, 10000, "full")
    costs = [size**2 * images for size, images, _ in points]
    assert costs == sorted(costs)


def test_reports_of_a_grid_run_in_parts_merge_into_one_table(tmp_path, capsys):
    from bench.versus_textbook import merge_reports, summarise

    def part(name: str, size: int, strategy: str, ours_seconds: float) -> str:
        runs = {(size, 1000, strategy, "ours"): [{"process_seconds": ours_seconds, "images_per_second": 300.0,
                                                  "test_accuracy": 0.9}],
                (size, 1000, strategy, "textbook"): [TEXTBOOK | {"test_accuracy": 0.9}]}  # fmt: skip
        path = tmp_path / name
        path.write_text(json.dumps({
            "machine": "m", "cpu": "c", "arguments": {"repeats": 1},
            "runs": {"/".join(map(str, k)): v for k, v in runs.items()},
            "verdicts": summarise([(size, 1000, strategy)], runs, 2, gpu=False),
        }))  # fmt: skip
        return str(path)

    parts = [part("b.json", 96, "full", 70.0), part("a.json", 32, "full", 40.0)]
    status = merge_reports(parts, str(tmp_path / "all.json"))

    table = capsys.readouterr().out
    assert status == 1 and "FAIL: 1 of 2 points" in table  # 70 s against 60 s fails
    assert merge_reports([*parts, part("rerun.json", 96, "full", 45.0)], None) == 0  # the re-run replaces it
    assert "PASS: 2 of 2 points" in capsys.readouterr().out
    assert table.index("| 32 ") < table.index("| 96 ")  # cheapest first
    merged = json.loads((tmp_path / "all.json").read_text())
    assert [v["image_size"] for v in merged["verdicts"]] == [32, 96] and len(merged["runs"]) == 4
    # An earlier merge merges again: a later re-run replaces its point, its parts carry over.
    rerun = part("rerun.json", 96, "full", 45.0)
    assert merge_reports([str(tmp_path / "all.json"), rerun], str(tmp_path / "again.json")) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [p["file"] for p in again["parts"]] == ["b.json", "a.json", "rerun.json"]
    assert again["runs"]["96/1000/full/ours"][0]["process_seconds"] == 45.0 and len(again["runs"]) == 4
