"""core: the base every stage and the conductor stand on.

The table contracts as plain data (``core.contracts``), the errors a user can act on (``core.errors``),
the one SparkSession factory (``core.spark``) and the generic data quality runner (``core.quality``).
This package never imports a stage (``spark_jobs``, ``encoders``, ``feature_repo``, ``ranker``) or the
conductor (``duet``): ``tests/test_layers.py`` fails if it does.
"""
