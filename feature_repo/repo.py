"""The repository's Feast objects for the lake ``$DUET_LAKE`` names: the one module of this folder
that defines objects at module level (``feast apply`` collects them from its globals).

The objects depend on the lake (its model versions, the served one), so they are built by
``catalog.repo_objects`` and placed in this module's namespace by name.
"""

from __future__ import annotations

from feature_repo.catalog import repo_objects, spec_from_environment

globals().update(repo_objects(spec_from_environment()))
