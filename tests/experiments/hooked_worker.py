"""`transferlab worker` with the experiment hooks, until worker/tasks.py calls them itself.

    python -m tests.experiments.hooked_worker worker --loglevel INFO

After a job ends the worker must write the job's plots (it alone holds the engine's Evaluation, with
the test predictions), before the job is marked succeeded, and advance the job's experiment once it
has ended. If worker/tasks.py already calls `notify_job_finished`, this runs the plain worker;
otherwise it wraps the task's two seams: run_engine (plots from its RunResult as it returns) and
execute_job (the experiment hook when it returns).
"""

from __future__ import annotations

import inspect
import sys

import worker.tasks as tasks
from service.artifacts import record_job_artifacts
from service.cli import main
from service.experiments.orchestrate import notify_job_finished

WIRED = "notify_job_finished" in inspect.getsource(tasks)


def _install() -> None:
    plain_engine, plain_execute = tasks.run_engine, tasks.execute_job

    def run_engine(spec, **kwargs):
        result = plain_engine(spec, **kwargs)
        record_job_artifacts(kwargs["workdir"].name, result)  # the workdir is runs/<job id>
        return result

    def execute_job(job_id: str, *args, **kwargs) -> str:
        outcome = plain_execute(job_id, *args, **kwargs)
        notify_job_finished(job_id)
        return outcome

    tasks.run_engine = run_engine
    tasks.execute_job = execute_job


if __name__ == "__main__":
    if not WIRED:
        _install()
    sys.exit(main(sys.argv[1:]))
