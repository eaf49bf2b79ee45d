"""transferlab's engine: pure PyTorch data sets, models, strategies, training, evaluation, checkpoints.

It imports nothing from service/ or worker/, nor any web, queue or database library, so it can be
driven from a notebook. Start at engine.run.run_job; engine.spec says what a job can ask for.
"""
