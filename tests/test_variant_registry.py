"""Adding a variant touches only the registry (issue 24): a toy variant, registered for this module alone
(``core.variants.register``; its encoder is ``tests/toy_variant.py``), goes through every stage the shipped
variants go through: pre-training, embedding, publishing through Feast (SQLite), the Feast training set
and the ranker's ablation beside ``none``. Every reader asks the registry when it is called, so a stage
that kept a copy of the variant list taken at import refuses the toy here and fails this test.

The lake: the raw and sequence tables of the session's small demo (tests/conftest.py ``demo_lake``: 300
synthetic users over 20 days, ``EVENTS``; the ranker's periods need that many days), copied; a toy model
of width 8 trained for one epoch; one ranker seed.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from core.contracts import TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError
from core.snapshots import daily_snapshots
from core.variants import NO_VECTOR, Variant, register, variant, variant_names
from duet.cli import build_parser
from duet.generate import GeneratorConfig
from encoders import model_store
from encoders.config import ModelConfig, PretrainConfig, TrainConfig
from encoders.variants import parameter_report
from ranker.config import RankerConfig, check_variants
from ranker.splits import demo_periods
from tests.conftest import SMALL_DEMO_ARGS

TOY = Variant("toy", "tests.toy_variant:ToyEncoder", two_embeddings=True, color="#9467bd",
              about="a test's toy: means of the clicked and converted advertisers, no attention")
DIM = 8
EVENTS = GeneratorConfig(users=300, days=20, seed=5)
# Small sizes for every variant: pre-training reports each registered variant's parameters and FLOPs.
SIZES = ModelConfig(dim=DIM, heads=2, ad_buckets=512, advertiser_buckets=256, click_layers=1,
                    conversion_blocks=1, shared_layers=1, click_only_layers=1, merged_layers=1)


def _knows_toy() -> dict[str, bool]:
    """Whether each reader of the registry knows the toy now."""
    def accepts(check) -> bool:
        try:
            check()
        except (DuetError, SystemExit):   # argparse exits on a choice it does not know
            return False
        return True

    return {
        "registry": TOY.name in variant_names(),
        "encoder config": accepts(lambda: ModelConfig(variant=TOY.name)),
        "encoder sizes": TOY.name in parameter_report(SIZES),
        "model versions": accepts(lambda: model_store.check_version(f"{TOY.name}-0123abc")),
        "ranker variants": accepts(lambda: check_variants([NO_VECTOR, TOY.name])),
        "command line": accepts(lambda: build_parser().parse_args(
            ["pretrain", "--lake", "lake", "--variant", TOY.name])),
    }


def test_a_registered_variant_is_known_inside_its_with_block_only():
    assert [reader for reader, knows in _knows_toy().items() if knows] == []
    with register(TOY) as toy:
        assert variant(TOY.name) is toy and variant_names()[-1] == TOY.name
        assert [reader for reader, knows in _knows_toy().items() if not knows] == []
        with pytest.raises(DuetError, match="already registered"):
            with register(TOY):
                pass
    assert [reader for reader, knows in _knows_toy().items() if knows] == []   # gone again, everywhere
    with pytest.raises(DuetError, match="already registered"), register(replace(TOY, name="duet")):
        pass
    for bad in (NO_VECTOR, "ext", "Toy", "toy-1"):   # reserved, or not a name a model version can start
        with pytest.raises(DuetError, match="variant name"):
            replace(TOY, name=bad)


@pytest.fixture(scope="module")
def toy_lake(spark, demo_lake, tmp_path_factory):
    """The toy registered, and every stage run on it: what each returned, by stage."""
    from encoders.embed import embed_snapshots
    from encoders.pretrain import pretrain
    from feature_repo.views import EMBEDDING_TTL
    from ranker.evaluate import AblationConfig, run_ablation
    from ranker.training_set import build_training_set
    from serving.publish import PublishConfig, publish
    from serving.store import StoreConfig, feature_store
    from spark_jobs.examples import ExamplesConfig, build_examples

    root = tmp_path_factory.mktemp("toy")
    lake = str(root / "lake")
    # The small demo's events (EVENTS) and its sequences of every daily snapshot, from the day after the
    # first events to the day after the last: its raw and feature tables, copied; none of its models.
    assert SMALL_DEMO_ARGS.split() == ["--users", str(EVENTS.users), "--days", str(EVENTS.days),
                                       "--seed", str(EVENTS.seed)]
    for tables in ("raw", "features"):
        shutil.copytree(Path(demo_lake) / tables, Path(lake) / tables)
    first = EVENTS.start + timedelta(days=1)
    snapshots = daily_snapshots(first.isoformat(), (first + timedelta(days=EVENTS.days - 1)).isoformat())
    periods = demo_periods(snapshots)
    splits = periods.splits
    # Embeddings only where they are read: the snapshots the ranker's point-in-time joins reach, and the
    # latest (the one published).
    reach = [t for t in snapshots if splits.train_from - EMBEDDING_TTL <= t < splits.test_until]
    with register(TOY):
        cfg = PretrainConfig(model=replace(SIZES, variant=TOY.name),
                             train=TrainConfig(epochs=1, batch_size=128, device="cpu"))
        version = pretrain(lake, cfg, train_until=splits.pretrain_until, log=lambda _: None).model_version
        embedded = embed_snapshots(lake, [*reach, snapshots[-1]], version, log=lambda _: None)
        store = StoreConfig(lake)
        published = publish(spark, PublishConfig(store, model_version=version), log=lambda _: None)
        build_examples(spark, ExamplesConfig(lake, periods.label_cutoff))
        training_set = build_training_set(spark, feature_store(store), lake, splits, [version])
        # One ridge penalty for the ranker's wide part: choosing among the default five is most of its cost.
        ranker = RankerConfig(ridge=(100.0,), max_epochs=3)
        ablation = run_ablation(AblationConfig(lake, {TOY.name: version}, seeds=(1,), ranker=ranker,
                                               bootstrap=50, save_as=None), log=lambda _: None)
        yield {"lake": lake, "version": version, "snapshot": snapshots[-1], "embedded": embedded,
               "published": published, "training_set": training_set, "ablation": ablation}


def _rows(lake: str, version: str, table=USER_EMBEDDINGS) -> list[dict]:
    return DeltaTable(table.location(lake)).to_pyarrow_table(filters=[("model_version", "=", version)]) \
        .to_pylist()


def test_the_toy_is_pretrained_and_embedded_with_its_registered_widths(toy_lake):
    lake, version = toy_lake["lake"], toy_lake["version"]
    assert version.startswith(f"{TOY.name}-") and model_store.list_versions(lake) == [version]
    assert model_store.version_dims(lake) == {version: (DIM, DIM)}        # two embeddings of dim each
    rows = _rows(lake, version)
    assert len(rows) == sum(r.embedded for r in toy_lake["embedded"]) > 0
    assert all(len(r["click_embedding"]) == len(r["conversion_embedding"]) == DIM for r in rows)


def test_feast_serves_the_published_toy(toy_lake):
    from feature_repo.catalog import read_serving
    from serving.online import SdkReader, online_config
    from serving.store import StoreConfig, feature_store

    lake, version, snapshot = toy_lake["lake"], toy_lake["version"], toy_lake["snapshot"]
    published = toy_lake["published"]
    assert (published.model_version, published.snapshot) == (version, snapshot.isoformat())
    assert read_serving(lake)["model_version"] == version
    store = feature_store(StoreConfig(lake))
    assert (online_config(store).click_dim, online_config(store).conversion_dim) == (DIM, DIM)
    stored = {r["user_id"]: r for r in _rows(lake, version) if r["event_timestamp"] == snapshot}
    users = sorted(stored)[:20]
    read = SdkReader(store).read(users, as_of=snapshot)
    assert read.error is None and not read.click_missing.any() and not read.conversion_missing.any()
    for i, user in enumerate(users):
        np.testing.assert_array_equal(read.click[i], np.array(stored[user]["click_embedding"], np.float32))
        np.testing.assert_array_equal(read.conversion[i],
                                      np.array(stored[user]["conversion_embedding"], np.float32))


def test_the_ranker_trains_on_the_toy_through_feast_beside_none(toy_lake):
    lake, version = toy_lake["lake"], toy_lake["version"]
    counts = toy_lake["training_set"].rows
    assert {key.split("/")[0] for key in counts} == {version}
    joined = [r for r in _rows(lake, version, TRAINING_SET) if r["embedding_ts"] is not None]
    assert joined and all(len(r["click_embedding"]) == len(r["conversion_embedding"]) == DIM for r in joined)
    ablation = toy_lake["ablation"]
    assert list(ablation.variants) == [NO_VECTOR, TOY.name]
    assert ablation.variants[TOY.name].model_version == version
    for name in (NO_VECTOR, TOY.name):
        assert math.isfinite(ablation.variants[name].ne)
