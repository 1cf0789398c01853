"""``mnist-sweep``: an Optuna study over one model's hyper-parameters that workers on many machines join.

| module | concern |
| --- | --- |
| ``params.py`` | the ``sweep`` section of params.yaml: the model, the search space, the pruner, the heartbeat |
| ``study.py`` | pure logic: a trial's params from the space, the objective on loaded arrays, each trial's MLflow run, writing the best params back into params.yaml |
| ``cli.py`` | the thin entry: the study's storage (an Optuna RDB: SQLite by default, PostgreSQL for a team), ``create``, ``worker``, ``best``, ``run`` |

No DVC stage reads the ``sweep`` section: a sweep explores, and ``mnist-sweep best --apply``
turns its result into an ordinary edit of ``models.<model>`` that DVC then retrains.
"""
