"""duet: Dual User Embedding Transformers as a product; this package is the conductor.

The conductor sits on top of the house and is the only code that knows every stage: the ``duet`` command
line (``duet.cli``, also behind spark-submit through ``duet.submit_entry``), the stages as objects and
their runner (``duet.stages``, ``duet.stage_cache``), the demo as a list of them (``duet.demo``), the
validation orchestration (``duet.validation``), the bring-your-own-embedding commands (``duet.byo``), the
report page (``duet.report``, ``duet.charts``) and the synthetic event generator (``duet.generate``, which
needs only ``core``).
What every stage shares (contracts, errors, the Spark factory, the quality runner) is the base package
``core``; the stages are ``spark_jobs``, ``encoders``, ``feature_repo`` and ``ranker``. Nothing below
imports this package (``tests/test_layers.py``).
"""

__version__ = "0.1.0"
