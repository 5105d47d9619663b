"""Stage 3's runtime: publishing embeddings to Feast's online store and reading them back.

``feature_repo/`` holds the Feast definitions only; this package does what happens with them:
``store`` (a ``FeatureStore`` for a lake; the registry apply), ``publish`` (data quality gate, registry
apply, materialization of one snapshot), ``online`` (the read path rankers use: Feast SDK, the feature
server over HTTP), ``fast`` (Feast's own online layout read directly), ``readers`` (the fast reader
for a deployment) and ``server`` (``duet serve``: Feast's feature server with the reads only). It
imports ``core``, ``encoders`` (checkpoint widths, the embedding suite) and ``feature_repo``; it never
parses command-line arguments (``duet/cli.py`` does).
"""
