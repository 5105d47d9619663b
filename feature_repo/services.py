"""Feature services: one per model version (its embeddings and the sequence summary, for training sets
and comparisons offline), and ``serving``: what ``duet publish`` put online, read by rankers."""

from __future__ import annotations

from feast import FeatureService, FeatureView

SERVING = "serving"


def version_service(name: str, model_version: str, views: list[FeatureView]) -> FeatureService:
    return FeatureService(name=name, features=views, tags={"model_version": model_version},
                          description=f"embeddings of {model_version} and the sequence summary")


def serving_service(model_version: str | None, views: list[FeatureView]) -> FeatureService:
    return FeatureService(name=SERVING, features=views, tags={"model_version": model_version or ""},
                          description="the published embeddings (online) and the sequence summary")
