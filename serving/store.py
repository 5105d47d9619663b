"""A Feast ``FeatureStore`` for a lake, and the registry apply ``feast apply`` would do.

The repository's ``feature_store.yaml`` (or another, e.g. ``infra/feast/feature_store.yaml``) is read
with ``${DUET_LAKE}`` replaced by the lake given here and other ``${VARS}`` from the environment (as
Feast reads it), so a library call never depends on, or changes, the process environment. An online
store override (``redis``) replaces the yaml's; a Redis online store always gets ``skip_dedup: true``:
Feast's Redis writer otherwise drops a write whose event time is not newer than the stored one, and a
re-published snapshot (same event time, fixed vectors) would silently not reach Redis (STACK.md).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import DuetError
from feature_repo.catalog import LAKE_VARIABLE, RepoSpec, lake_root, repo_objects

REPO_PATH = Path(__file__).resolve().parent.parent / "feature_repo"
DEFAULT_YAML = REPO_PATH / "feature_store.yaml"


@dataclass(frozen=True)
class StoreConfig:
    """Which Feast deployment: the lake, the yaml (default: the repository's) and an optional Redis
    online store (``host:port[,db=N,password=...]``, Feast's connection string) replacing the yaml's."""

    lake: str
    yaml_path: str | None = None
    redis: str | None = None


def render_yaml(cfg: StoreConfig) -> str:
    """The effective ``feature_store.yaml`` for ``cfg`` (what a ``feast serve -f`` of it would use)."""
    path = Path(cfg.yaml_path) if cfg.yaml_path else DEFAULT_YAML
    try:
        text = path.read_text()
    except OSError as e:
        raise DuetError(f"cannot read the Feast configuration {path}: {e}") from e
    raw = yaml.safe_load(os.path.expandvars(text.replace("${" + LAKE_VARIABLE + "}", lake_root(cfg.lake))))
    if cfg.redis:
        raw["online_store"] = {"type": "redis", "connection_string": cfg.redis}
    if raw.get("online_store", {}).get("type") == "redis":
        raw["online_store"]["skip_dedup"] = True
    return yaml.safe_dump(raw, sort_keys=False)


def repo_config(cfg: StoreConfig):
    from feast.repo_config import RepoConfig

    config = RepoConfig(**yaml.safe_load(render_yaml(cfg)))
    config.repo_path = REPO_PATH
    return config


def feature_store(cfg: StoreConfig):
    """A ``FeatureStore`` on ``cfg``; the registry folder is created for a local lake."""
    from feast import FeatureStore

    config = repo_config(cfg)
    registry = str(config.registry.path)
    if "://" not in registry:
        Path(registry).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Spark offline store is experimental"
        return FeatureStore(config=config)


def apply(store, spec: RepoSpec) -> str:
    """Register ``spec``'s objects and delete the registry's others, as ``feast apply`` does with the
    repository (same Feast code path, without importing the repository's files); returns Feast's diff."""
    from feast.data_source import DataSource
    from feast.entity import Entity
    from feast.feature_service import FeatureService
    from feast.feature_view import DUMMY_ENTITY, FeatureView
    from feast.project import Project
    from feast.repo_contents import RepoContents
    from feast.repo_operations import apply_total_with_repo_instance

    objects = list(repo_objects(spec).values())
    views = [o for o in objects if isinstance(o, FeatureView)]
    repo = RepoContents(
        projects=[Project(name=store.config.project)],
        data_sources=[o for o in objects if isinstance(o, DataSource)] + [
            v.batch_source for v in views if not any(v.batch_source is o for o in objects)],
        feature_views=views, on_demand_feature_views=[], stream_feature_views=[], label_views=[],
        entities=[o for o in objects if isinstance(o, Entity)] + [DUMMY_ENTITY],
        feature_services=[o for o in objects if isinstance(o, FeatureService)], permissions=[])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        apply_total_with_repo_instance(store, store.config.project, store.registry, repo,
                                       skip_source_validation=True)
    return out.getvalue()
