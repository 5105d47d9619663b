"""A Feast ``FeatureStore`` for a lake, and the registry apply ``feast apply`` would do.

The repository's ``feature_store.yaml`` (or another, e.g. ``infra/feast/feature_store.yaml``) is read
with ``${DUET_LAKE}`` replaced by the lake given here and other ``${VARS}`` from the environment (as
Feast reads it), so a library call never depends on, or changes, the process environment.
``${DUET_LAKE}/_feast`` is the lake's Feast folder (``core.lake``): under the root of a local lake, in the
home of a lake on object storage (a registry file and SQLite need a file system). An online
store override (``redis``) replaces the yaml's; a Redis online store always gets ``skip_dedup: true``:
Feast's Redis writer otherwise drops a write whose event time is not newer than the stored one, and a
re-published snapshot (same event time, fixed vectors) would silently not reach Redis (STACK.md).
A Redis password is never part of a command line: ``redis_password`` reads it from a file or the
environment and adds it to the connection string in this process only.

A registry apply touches this deployment's online store and no other (``home_registry``): Feast's
registry records each SQLite table with its file's absolute path and drops the recorded tables whose
path differs from the configured one, so applying a copied lake's registry used to empty the original
lake's store (issue 23).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import DuetError
from core.lake import FEAST, Lake, absolute, is_uri
from feature_repo.catalog import LAKE_VARIABLE, RepoSpec, repo_objects

REPO_PATH = Path(__file__).resolve().parent.parent / "feature_repo"
DEFAULT_YAML = REPO_PATH / "feature_store.yaml"


PASSWORD_VARIABLE, PASSWORD_FILE_VARIABLE = "DUET_REDIS_PASSWORD", "DUET_REDIS_PASSWORD_FILE"
# Set on each FeatureStore ``feature_store`` builds: its lake, whose serving record names each model
# version's online slot (``serving.online.lake_of``).
LAKE_ATTRIBUTE = "duet_lake"


def _has_password(connection_string: str) -> bool:
    return any(part.strip().startswith("password=") for part in connection_string.split(","))


@dataclass(frozen=True)
class StoreConfig:
    """Which Feast deployment: the lake, the yaml (default: the repository's) and an optional Redis
    online store (``host:port[,db=N,ssl=true]``, Feast's connection string) replacing the yaml's.
    ``redis`` never holds a password (it comes from a command line, which ``ps`` shows to every user):
    the password is read from ``$DUET_REDIS_PASSWORD_FILE`` or ``$DUET_REDIS_PASSWORD``
    (``redis_password``)."""

    lake: str
    yaml_path: str | None = None
    redis: str | None = None

    def __post_init__(self):
        if self.redis and _has_password(self.redis):
            raise DuetError(f"the Redis address takes HOST:PORT[,db=N,ssl=true] without a password: a "
                            f"command line is visible to every user of the machine (ps). Put the password in "
                            f"a file named by {PASSWORD_FILE_VARIABLE} (or in {PASSWORD_VARIABLE})",
                            fields=("redis",))


def redis_password() -> str | None:
    """The Redis password from ``$DUET_REDIS_PASSWORD_FILE`` (the file's first line; a mounted secret)
    or ``$DUET_REDIS_PASSWORD``, or None. Both set is an error, and so is a comma (Feast's connection
    string separates its settings with commas)."""
    value, path = os.environ.get(PASSWORD_VARIABLE), os.environ.get(PASSWORD_FILE_VARIABLE)
    if value and path:
        raise DuetError(f"set one of {PASSWORD_VARIABLE} and {PASSWORD_FILE_VARIABLE}, not both")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
            value = lines[0] if lines else ""
        except OSError as e:
            raise DuetError(f"cannot read the Redis password file {path} ({PASSWORD_FILE_VARIABLE}): "
                            f"{e.strerror or e}") from None
        if not value:
            raise DuetError(f"the Redis password file {path} ({PASSWORD_FILE_VARIABLE}) is empty")
    if value and "," in value:
        raise DuetError("the Redis password holds a comma, which Feast's connection string cannot carry")
    return value or None


def render_yaml(cfg: StoreConfig) -> str:
    """The effective ``feature_store.yaml`` for ``cfg`` (what a ``feast serve -f`` of it would use;
    with the Redis password of ``redis_password`` in it, if any: keep such a file private)."""
    path = Path(cfg.yaml_path) if cfg.yaml_path else DEFAULT_YAML
    try:
        text = path.read_text()
    except OSError as e:
        raise DuetError(f"cannot read the Feast configuration {path}: {e}") from e
    variable = "${" + LAKE_VARIABLE + "}"
    if f"{variable}/{FEAST}" in text:
        text = text.replace(f"{variable}/{FEAST}", str(Lake(cfg.lake).feast))
    raw = yaml.safe_load(os.path.expandvars(text.replace(variable, absolute(cfg.lake))))
    if cfg.redis:
        raw["online_store"] = {"type": "redis", "connection_string": cfg.redis}
    if raw.get("online_store", {}).get("type") == "redis":
        raw["online_store"]["skip_dedup"] = True
        password = redis_password()
        if password:
            connection = str(raw["online_store"].get("connection_string", ""))
            if _has_password(connection):
                raise DuetError(f"two Redis passwords: the configuration's connection string has one, and "
                                f"{PASSWORD_VARIABLE} or {PASSWORD_FILE_VARIABLE} another")
            # Feast json-decodes each value of the string (a password "1e3" would become 1000.0, "null"
            # none at all): a JSON string decodes back to exactly the password.
            raw["online_store"]["connection_string"] = f"{connection},password={json.dumps(password)}"
    return yaml.safe_dump(raw, sort_keys=False)


def repo_config(cfg: StoreConfig):
    from feast.repo_config import RepoConfig

    config = RepoConfig(**yaml.safe_load(render_yaml(cfg)))
    config.repo_path = REPO_PATH
    return config


def feature_store(cfg: StoreConfig):
    """A ``FeatureStore`` on ``cfg`` that knows its lake (``LAKE_ATTRIBUTE``); the registry folder is
    created for a local lake."""
    from feast import FeatureStore

    config = repo_config(cfg)
    registry = str(config.registry.path)
    if not is_uri(registry):
        Path(registry).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Spark offline store is experimental"
        store = FeatureStore(config=config)
    setattr(store, LAKE_ATTRIBUTE, absolute(cfg.lake))
    return store


_SQLITE_TABLE = "feast.infra.online_stores.sqlite.SqliteTable"


def _inside(path: str, lake: str) -> bool:
    """Whether ``path`` is in the lake's own folders (its root, or the home of a lake on object storage)."""
    return absolute(path).startswith(str(Lake(lake).home) + "/")


def home_registry(store, lake: str) -> str | None:
    """Make sure the registry's apply can touch no online store but this deployment's (module
    docstring); returns a line saying what was re-homed, or None when nothing had to be.

    Feast records each SQLite online table in the registry with its file's absolute path, and its apply
    drops the recorded tables of any path that differs from the configured one. So a registry that
    records another file (a copied or moved lake) is fixed here, before Feast opens anything: the
    lake's own registry (under ``lake``) is re-homed (its records rewritten to this deployment's file,
    the only write; the other file is never opened); a registry elsewhere (one shared by several
    deployments) is refused. Other online stores (Redis) have no such records: Feast's apply for them
    uses the configuration only."""
    config = store.config
    if config.online_store.type != "sqlite":
        return None
    own = str(config.online_store.path)
    if config.repo_path and not Path(own).is_absolute():   # as Feast's SqliteOnlineStore._get_db_path
        own = str(Path(config.repo_path) / own)
    registry = store.registry
    registry.refresh(project=config.project)
    current = registry.proto().infra
    others = sorted({o.sqlite_table.path for o in current.infra_objects
                     if o.infra_object_class_type == _SQLITE_TABLE and o.sqlite_table.path != own})
    if not others:
        return None
    registry_path = str(config.registry.path)
    if not _inside(registry_path, lake):
        raise DuetError(f"the Feast registry {registry_path} records the online store {', '.join(others)}, "
                        f"not this lake's {own}: it belongs to another deployment, and applying it here "
                        "would drop that store's tables. Give this lake a registry of its own (the default "
                        f"feature_store.yaml keeps it under the lake's {FEAST}/)")
    from feast.infra.infra_object import Infra
    from feast.protos.feast.core.InfraObject_pb2 import Infra as InfraProto

    rehomed = InfraProto()
    rehomed.CopyFrom(current)
    for record in rehomed.infra_objects:
        if record.infra_object_class_type == _SQLITE_TABLE:
            record.sqlite_table.path = own
    registry.update_infra(Infra.from_proto(rehomed), config.project, commit=True)
    return (f"re-homed the registry {registry_path}: it recorded the online store {', '.join(others)} "
            f"(a copied or moved lake); it now records {own}, and the other store was not opened")


def apply(store, spec: RepoSpec, log=print) -> str:
    """Register ``spec``'s objects and delete the registry's others, as ``feast apply`` does with the
    repository (same Feast code path, without importing the repository's files); returns Feast's diff.
    First ``home_registry``: the apply touches this deployment's online store and no other."""
    rehomed = home_registry(store, spec.lake)
    if rehomed:
        log(rehomed)
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
