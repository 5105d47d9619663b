"""What the repository is built for: the lake, its model versions and the one served online.

``spec_from_lake`` reads each model version's ``config.json`` under ``_models/`` (widths; no torch: a
checkpoint's config or an imported embedding's record, ``encoders.model_store.version_dims``) and
``_feast/serving.json`` (the model version ``duet publish`` chose); ``repo_objects`` builds every Feast
object from that spec. ``repo.py`` calls both for ``feast apply``; ``serving.publish`` calls them too, so
the command line and the publisher register the same objects. Every view name is spelled here.

Model versions: each gets its own source (the table filtered to that version), views
``user_click_embeddings_<variant>_<hash>`` (and ``user_conversion_embeddings_<...>`` for two-embedding
variants) and a FeatureService ``<variant>_<hash>``: training sets of several versions side by side
(offline; ``version_views``).

Online, a two-embedding version has two *slots* of views, ``a`` and ``b`` (``slot_views``): the click
and conversion embeddings and the sequence summary, ``<view>_<variant>_<hash>_<slot>`` (the summary
from the same source as ``user_sequence_summary``). ``duet publish`` writes a snapshot into the slot its
version's record does not name, then names it in one atomic write of ``_feast/serving.json``
(``serving.versions``): blue-green, so the slot a reader is sent to holds one whole snapshot of one
version, summary included. Versions never share an online row, and a reader that names a version reads
only that version's rows (``serving.online``). A record written before slots existed names no slot: its
version is read from the version's own views as they were published then (``slot_views(v, None)``).

The version the ``serving`` alias names (``_feast/serving.json``, moved by ``duet promote``/``rollback``)
also backs the contract's ``user_click_embeddings``, ``user_conversion_embeddings`` and
``user_sequence_summary`` (a copy of its published snapshot for clients that name the contract's views,
such as raw ``feast serve``, rewritten in place after each switch) and the ``serving`` FeatureService.
Before the first publish the newest duet checkpoint is the default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from core.errors import DuetError
from core.lake import Lake, absolute
from encoders.model_store import is_external, version_dims

# The feature views' names, spelled here only: the online read path, the training set and the ranker
# name features by them (``<view>:<feature>``).
CLICK_VIEW, CONVERSION_VIEW = "user_click_embeddings", "user_conversion_embeddings"
SUMMARY_VIEW = "user_sequence_summary"
LAKE_VARIABLE = "DUET_LAKE"
# The two online slots of a version (module docstring): a publish writes the one its record does not name.
SLOTS = ("a", "b")


@dataclass(frozen=True)
class RepoSpec:
    """The lake (absolute), each model version with its widths (click, conversion or None), in training
    order, and the version served online (None: no two-embedding model yet)."""

    lake: str
    versions: tuple[tuple[str, int, int | None], ...]
    serving: str | None


def model_dims(lake: str) -> dict[str, tuple[int, int | None]]:
    """Model version -> (click width, conversion width or None), oldest first, from ``config.json``
    (checkpoints and imported embeddings)."""
    return version_dims(lake)


def read_serving(lake: str) -> dict | None:
    """What ``duet publish`` and ``duet promote`` recorded, or None before the first publish: the alias's
    version at its published snapshot (``model_version``, ``snapshot``, ``users``, ``published_at``), the
    version it replaced (``previous``) and, under ``versions``, each version's fully published snapshot
    and the online slot that holds it (``slot``; ``serving.versions``)."""
    path = Lake(lake).serving_file
    return json.loads(path.read_text()) if path.is_file() else None


def version_views(model_version: str) -> tuple[str, str]:
    """The click and conversion views of one model version (offline: its FeatureService, training sets;
    online only for records written before slots, ``slot_views``)."""
    from feature_repo.sources import slug

    tag = slug(model_version)
    return f"{CLICK_VIEW}_{tag}", f"{CONVERSION_VIEW}_{tag}"


@dataclass(frozen=True)
class SlotViews:
    """The online views a reader of one version reads together: click, conversion, summary."""

    click: str
    conversion: str
    summary: str

    @property
    def names(self) -> tuple[str, str, str]:
        return self.click, self.conversion, self.summary


def slot_views(model_version: str, slot: str | None) -> SlotViews:
    """The views of ``model_version``'s online ``slot`` (``SLOTS``); ``None``: the layout before slots
    (the version's own views and the unversioned summary, what a record without a slot names)."""
    from feature_repo.sources import slug

    if slot is None:
        return SlotViews(*version_views(model_version), SUMMARY_VIEW)
    if slot not in SLOTS:
        raise DuetError(f"not an online slot: {slot!r} (one of {', '.join(SLOTS)})")
    tag = f"{slug(model_version)}_{slot}"
    return SlotViews(f"{CLICK_VIEW}_{tag}", f"{CONVERSION_VIEW}_{tag}", f"{SUMMARY_VIEW}_{tag}")


def other_slot(slot: str | None) -> str:
    """The slot a publish writes when its version's record names ``slot`` (the first: ``SLOTS[0]``)."""
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def spec_from_lake(lake: str) -> RepoSpec:
    root = absolute(lake)
    dims = model_dims(root)
    recorded = read_serving(root)
    serving = recorded["model_version"] if recorded and recorded.get("model_version") in dims else None
    if serving is None:
        duet = [v for v, (_, conversion) in dims.items() if conversion and not is_external(v)]
        serving = duet[-1] if duet else None
    return RepoSpec(root, tuple((v, c, k) for v, (c, k) in dims.items()), serving)


def spec_from_environment() -> RepoSpec:
    """The spec of the lake ``$DUET_LAKE`` names (what ``feast -c feature_repo ...`` builds)."""
    lake = os.environ.get(LAKE_VARIABLE)
    if not lake:
        raise DuetError(f"{LAKE_VARIABLE} is not set: run e.g. {LAKE_VARIABLE}=demo-work/lake "
                        "feast -c feature_repo apply")
    return spec_from_lake(lake)


def repo_objects(spec: RepoSpec) -> dict[str, object]:
    """Every Feast object of the repository, by a unique Python name."""
    # Feast is imported here, not at module level: `duet publish` checks its arguments with this module
    # before anything heavy loads.
    from feature_repo import entities, services, sources, views

    user = entities.user()
    summary_source = sources.summary_source(spec.lake, SUMMARY_VIEW)
    summary = views.summary_view(SUMMARY_VIEW, summary_source, user)
    # Registered once, as the embeddings' sources are: every slot's summary view reads it.
    out: dict[str, object] = {"user": user, SUMMARY_VIEW: summary, "source_summary": summary_source}
    for version, click_dim, conversion_dim in spec.versions:
        tag = sources.slug(version)
        source = sources.embedding_source(spec.lake, version)
        online = bool(conversion_dim)     # only two-embedding versions are published (serving.publish)
        members = [views.embedding_view(f"{CLICK_VIEW}_{tag}", views.CLICK_FEATURE, source, user, version,
                                        click_dim, online=online, with_timestamp=True)]
        if conversion_dim:
            members.append(views.embedding_view(f"{CONVERSION_VIEW}_{tag}", views.CONVERSION_FEATURE, source,
                                                user, version, conversion_dim, online=online))
        if version == spec.serving:
            served = [views.embedding_view(CLICK_VIEW, views.CLICK_FEATURE, source, user, version, click_dim,
                                           online=True),
                      views.embedding_view(CONVERSION_VIEW, views.CONVERSION_FEATURE, source, user, version,
                                           conversion_dim, online=True)]
            out.update({CLICK_VIEW: served[0], CONVERSION_VIEW: served[1],
                        services.SERVING: services.serving_service(version, [*served, summary])})
        out.update({m.name: m for m in members})
        if conversion_dim:
            for slot in SLOTS:
                names = slot_views(version, slot)
                out[names.click] = views.embedding_view(names.click, views.CLICK_FEATURE, source, user,
                                                        version, click_dim, online=True)
                out[names.conversion] = views.embedding_view(names.conversion, views.CONVERSION_FEATURE,
                                                             source, user, version, conversion_dim,
                                                             online=True)
                out[names.summary] = views.summary_view(names.summary, summary_source, user)
        out[f"service_{tag}"] = services.version_service(tag, version, [*members, summary])
        out[f"source_{tag}"] = source
    return out
