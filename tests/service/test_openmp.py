"""The API process's OpenMP waiting policy: set before torch loads, never over the operator's choice."""

from __future__ import annotations

from service.openmp import SERVING_OPENMP, tune_openmp_for_serving


def test_both_variables_are_set_when_neither_is():
    environ: dict[str, str] = {}
    assert tune_openmp_for_serving(environ, modules={}) == SERVING_OPENMP
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "30000"}


def test_an_operators_setting_is_left_alone():
    environ = {"OMP_WAIT_POLICY": "PASSIVE"}
    assert tune_openmp_for_serving(environ, modules={}) == {}
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_nothing_is_set_once_torch_is_loaded():
    environ: dict[str, str] = {}
    assert tune_openmp_for_serving(environ, modules={"torch": object()}) == {}
    assert environ == {}
