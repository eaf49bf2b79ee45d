"""bench/versus_textbook.py's verdicts say what issue 15's targets say, and --quick is one point."""

from __future__ import annotations

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
