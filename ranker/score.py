"""Online scoring: a user's candidate ads ranked by the saved ranker, with features read online.

The user's two embeddings come through ``serving.online.SdkReader`` (Feast's online store, the views'
ttl applied, zeros and a missing flag when absent: the ranker was trained with the same convention for
clicks whose point-in-time join found no row); the sequence summary through the same store.
Candidates are ``(ad_id, advertiser_id)`` pairs. The ranker is the one the ablation saved for a model
version (``_rankers/<model_version>``), and the embeddings are read from the online views of the model
version its checkpoint records (``online_vectors``), never from those of another version: a user without
a row of that version is missing, whatever the ``serving`` alias names.
The summary is read from the same online slot as the embeddings (``feature_repo.catalog.slot_views``:
the slot the serving record named at the read), so both are of one snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch

from core.errors import DuetError
from core.records import from_dict
from encoders.hashing import bucketize
from feature_repo.catalog import slot_views
from feature_repo.views import SUMMARY_FEATURES
from ranker.checkpoint import load_ranker
from ranker.config import RankerConfig
from ranker.data import Batch, summary_features
from ranker.train import predict


@dataclass(frozen=True)
class Scored:
    ad_id: str
    advertiser_id: str
    probability: float


def _summary(store, view: str, user: str) -> pa.Table:
    response = store.get_online_features(features=[f"{view}:{n}" for n in SUMMARY_FEATURES],
                                         entity_rows=[{"user_id": user}]).to_dict()
    return pa.table({name: pa.array(response[name], pa.float64()) for name in SUMMARY_FEATURES})


def resolve_candidates(lake: str, ads: Sequence[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """``(ad_id, advertiser_id or None)`` -> pairs, the advertiser of an ad read from ``raw/clicks``."""
    from core.contracts import RAW_CLICKS
    from core.object_storage import delta_table

    wanted = sorted({a for a, adv in ads if adv is None})
    known: dict[str, str] = {}
    if wanted:
        table = delta_table(RAW_CLICKS.location(lake)).to_pyarrow_table(
            columns=["ad_id", "advertiser_id"], filters=[("ad_id", "in", wanted)])
        known = dict(zip(table.column("ad_id").to_pylist(), table.column("advertiser_id").to_pylist(),
                         strict=True))
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise DuetError(f"ad(s) never clicked in this lake: {', '.join(unknown[:5])}; give them as "
                        "AD@ADVERTISER")
    return [(a, adv if adv is not None else known[a]) for a, adv in ads]


def checkpoint_version(document: dict, name: str) -> str:
    """The model version a ranker checkpoint was trained on (recorded by ``ranker.evaluate``; a checkpoint
    saved before it was recorded is named after it)."""
    return document.get("model_version") or name


def online_vectors(store, model_version: str, user_ids: Sequence[str], as_of: datetime | None):
    """The ranker's online read: both embeddings of ``model_version`` (``serving.online``)."""
    from serving.online import SdkReader, online_config

    return SdkReader(store, online_config(store, model_version)).read(list(user_ids),
                                                                      as_of or datetime.now(UTC))


def score(store, lake: str, model_version: str, user: str, candidates: Sequence[tuple[str, str]],
          as_of: datetime | None = None) -> tuple[list[Scored], dict]:
    """Candidates by descending conversion probability, and what was read online (missing flags, the
    embeddings' snapshot)."""
    if not candidates:
        raise DuetError("no candidate ad to score")
    model, document = load_ranker(lake, model_version)
    cfg = from_dict(RankerConfig, document["config"])
    embeddings = online_vectors(store, checkpoint_version(document, model_version), [user], as_of)
    if embeddings.error:
        raise DuetError(f"the online store could not be read: {embeddings.error}")
    n = len(candidates)
    user_vector = np.concatenate([embeddings.click, embeddings.conversion], axis=1)
    if user_vector.shape[1] != model.user_width:
        raise DuetError(f"the ranker expects {model.user_width} embedding values, the store serves "
                        f"{user_vector.shape[1]}: publish the model version the ranker was trained with")
    missing = float(embeddings.click_missing[0] or embeddings.conversion_missing[0])
    view = slot_views(embeddings.model_version, embeddings.slot).summary    # the embeddings' snapshot
    summary = np.repeat(summary_features(_summary(store, view, user)), n, axis=0)
    ads = pa.array([c[0] for c in candidates], pa.string())
    advertisers = pa.array([c[1] for c in candidates], pa.string())
    batch = Batch(ad=torch.from_numpy(bucketize(ads, cfg.ad_buckets)),
                  advertiser=torch.from_numpy(bucketize(advertisers, cfg.advertiser_buckets)),
                  summary=torch.from_numpy(summary),
                  user=torch.from_numpy(np.repeat(user_vector * (1 - missing), n, axis=0).astype(np.float32)),
                  user_missing=torch.full((n,), missing), label=torch.zeros(n),
                  user_ids=np.asarray([user] * n, dtype=object))
    p = predict(model, batch).numpy()
    ranked = sorted((Scored(a, b, float(q)) for (a, b), q in zip(candidates, p, strict=True)),
                    key=lambda s: -s.probability)
    return ranked, {"user": user, "embedding_missing": bool(missing),
                    "embedding_snapshot": int(embeddings.click_ts[0]) or None,
                    "model_version": embeddings.model_version}
