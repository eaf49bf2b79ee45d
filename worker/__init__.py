"""The Celery side: one task, `transferlab.run_job`, that joins a job record to an engine run.

transferlab worker --device cuda:0            # one process per GPU
celery -A worker.celery_app worker --pool=solo --loglevel=INFO   # the same, by hand
"""
