"""Experiments: the seed's whole study (pre-train, adapt with strategies, sweep, compare, report) as
one request.

    schemas.py      the request (ExperimentCreate) and what the API answers
    plan.py         request -> the job specs (strategies x frozen_blocks x sweep grid, plus controls)
    orchestrate.py  create the jobs, fan out the fine-tunes once the pre-train succeeded, finish
    compare.py      the comparison table, from stored rows only
    report.py       Markdown and HTML, every number from stored rows
"""
