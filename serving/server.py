"""``duet serve``: Feast's feature server for rankers, reads only, on loopback unless told otherwise.

``feast serve`` exposes every endpoint of Feast's app: besides ``POST /get-online-features`` it serves
``/write-to-online-store``, ``/push``, ``/materialize`` and more, and under ``auth: no_auth`` (duet's
configurations) anyone who reaches the port can overwrite a user's embedding (issue 23). Feast's oidc and
kubernetes auth would not close the writes either: with no ``Permission`` objects in the registry (duet
registers none) every authenticated user gets full access (``feast.permissions.enforcer``).
``duet serve`` runs the same app (``feast.feature_server.get_app``: the same
request and response format, the same registry refresh) with every route removed but ``READ_ROUTES``;
any other request gets 403 and a line saying why. An allow-list, not a deny-list: a route a later Feast
adds stays refused until it is listed here. Writes reach the online store through ``duet publish``
only.

It listens on 127.0.0.1 unless ``host`` says otherwise: beside each ranker (a sidecar), nothing outside
the machine reaches it; a shared serving tier binds a private address on purpose. Reads are not
authenticated: what can reach the port can read every user's embeddings, so the network decides who may.
"""

from __future__ import annotations

import logging
import warnings

from serving.store import StoreConfig, feature_store

READ_ROUTES = frozenset({("POST", "/get-online-features"), ("GET", "/health")})
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 6566
REGISTRY_TTL_SEC = 60   # how often the server re-reads the registry (a publish's new model version)
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def read_only_app(store, registry_ttl_sec: int = REGISTRY_TTL_SEC):
    """Feast's feature-server app for ``store`` with only ``READ_ROUTES``; everything else 403."""
    from fastapi.responses import JSONResponse
    from feast.feature_server import get_app
    from starlette.routing import Route

    app = get_app(store, registry_ttl_sec)
    app.router.routes[:] = [r for r in app.router.routes
                            if any((m, getattr(r, "path", None)) in READ_ROUTES
                                   for m in getattr(r, "methods", None) or ())]

    async def refuse(request):
        served = ", ".join(f"{m} {p}" for m, p in sorted(READ_ROUTES))
        return JSONResponse(status_code=403, content={
            "detail": f"duet serve is read-only: {request.method} {request.url.path} is not served "
                      f"(only {served}); the online store is written by `duet publish`"})

    app.router.routes.append(Route("/{path:path}", refuse, methods=_METHODS))
    return app


def serve(cfg: StoreConfig, host: str = LOOPBACK, port: int = DEFAULT_PORT,
          registry_ttl_sec: int = REGISTRY_TTL_SEC, log=print) -> None:
    """Serve ``read_only_app`` for the deployment ``cfg`` until interrupted (one process; run replicas
    to scale). Feast's auth settings of the configuration are initialised as ``feast serve`` does."""
    # Imported before the filter below: these Feast modules put a "once" filter first when imported.
    import feast.feature_server  # noqa: F401
    import feast.infra.offline_stores.contrib.spark_offline_store.spark  # noqa: F401
    import uvicorn
    from feast.permissions.server.utils import (
        ServerType,
        init_auth_manager,
        init_security_manager,
        str_to_auth_manager_type,
    )

    # This process only serves: Feast's "Spark data source API is experimental" warning, repeated at every
    # registry refresh, says nothing about it.
    warnings.filterwarnings("ignore", message="The spark data source API", category=RuntimeWarning)
    store = feature_store(cfg)
    auth = str_to_auth_manager_type(store.config.auth_config.type)
    # Feast warns under no_auth that "all endpoints are unauthenticated": here only the reads exist, and
    # the line below says that they are not authenticated.
    logging.getLogger("feast.permissions.server.utils").setLevel(logging.ERROR)
    init_security_manager(auth_type=auth, fs=store)
    init_auth_manager(server_type=ServerType.REST, auth_type=auth, auth_config=store.config.auth_config)
    app = read_only_app(store, registry_ttl_sec)
    served = ", ".join(f"{m} {p}" for m, p in sorted(READ_ROUTES))
    log(f"duet serve: {served} of the {store.config.online_store.type} online store of {cfg.lake} at "
        f"http://{host}:{port}, nothing else (reads are not authenticated: whatever reaches this address may "
        f"read)")
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
