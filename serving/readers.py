"""The reader a ranker should use for a deployment, chosen from its ``StoreConfig``: the fast path on
the configured online store (SQLite file or Redis), with the widths and ttl from the registry, reading
the slot the lake's serving record names at each read (``serving.online``)."""

from __future__ import annotations

from dataclasses import replace

from core.lake import absolute
from serving.online import OnlineConfig, online_config
from serving.store import StoreConfig, feature_store


def fast_reader(cfg: StoreConfig, online: OnlineConfig | None = None, model_version: str | None = None):
    """A ``serving.fast`` reader on ``cfg``'s online store (SQLite or Redis) of ``online``'s model version,
    else ``model_version``'s, else the one the ``serving`` alias names (``serving.online.online_config``)."""
    from serving import fast

    store = feature_store(cfg)
    online = online or online_config(store, model_version)
    if online.model_version and not online.lake:
        online = replace(online, lake=absolute(cfg.lake))   # the slot is the one this lake's record names
    config = store.config.online_store
    if config.type == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStore

        # Feast's own client for the configured connection string (db, password, ssl, cluster or
        # sentinel), so the fast path reads exactly where Feast writes.
        client = RedisOnlineStore()._get_client(config)
        return fast.RedisReader(client, online, store.config.project)
    if config.type == "sqlite":
        return fast.SqliteReader(str(config.path), online, store.config.project)
    raise ValueError(f"no fast path for the {config.type} online store: use serving.online.SdkReader")
