"""duet: Dual User Embedding Transformers as a product.

This package holds what every stage shares (the table contracts, typed configs, the Spark session
factory, errors) and the conductor on top (the ``duet`` command line and the pipeline). Stage packages
(``spark_jobs``, ``encoders``, ``ranker``) import from here; this package's shared modules never import
a stage, only the conductor (``duet.cli``, ``duet.pipeline``) does.
"""

__version__ = "0.1.0"
