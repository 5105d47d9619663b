"""The encoders on their own (torch and pyarrow only): shapes, padding, empty streams, the attention fast
path against a naive reference, checkpoints, determinism, objectives, hashing, configs, targets."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from benchmarks.synthetic_sequences import synthetic_rows, synthetic_targets
from core.errors import DuetError
from core.metrics import auc, normalized_entropy
from core.records import from_dict, to_dict
from core.variants import variant_names  # tests parametrised by variant cover each registered one
from encoders import attention, checkpoint
from encoders.batch import INPUT_SCHEMA, UserBatch, tensorize, tensorize_targets
from encoders.config import (
    ModelConfig,
    ObjectiveConfig,
    PretrainConfig,
    TrainConfig,
    embedding_dims,
)
from encoders.evaluate import logistic_probe
from encoders.examples import add_targets, join_sequences
from encoders.hashing import bucketize, fnv1a64
from encoders.merged_encoder import most_recent
from encoders.objectives import AdvertiserRetrieval
from encoders.shards import ShardWriter
from encoders.train import fit
from encoders.variants import UserModel, full_batch, parameter_report
from tests.conftest import REPO

T = datetime(2026, 1, 10, tzinfo=UTC)
SMALL = ModelConfig(dim=16, heads=2, ad_buckets=257, advertiser_buckets=64, conversion_type_buckets=8,
                    click_layers=1, conversion_blocks=1, shared_layers=2, click_only_layers=2,
                    merged_layers=2)


def _model(variant: str, cfg: ModelConfig = SMALL, seed: int = 0) -> UserModel:
    torch.manual_seed(seed)
    return UserModel(replace(cfg, variant=variant), ObjectiveConfig()).eval()


def _row(user: str, clicks: list[tuple[str, str, float]], conversions: list[tuple[str, str, float, bool]],
         snapshot: datetime = T) -> dict:
    """clicks: (ad, advertiser, hours before snapshot); conversions: (advertiser, type, hours, attributed)."""
    def at(hours: float) -> datetime:
        return snapshot - timedelta(hours=hours)

    return {
        "user_id": user, "snapshot_ts": snapshot,
        "click_ad_ids": [c[0] for c in clicks] if clicks else None,
        "click_advertiser_ids": [c[1] for c in clicks] if clicks else None,
        "click_ts": [at(c[2]) for c in clicks] if clicks else None,
        "conversion_advertiser_ids": [c[0] for c in conversions] if conversions else None,
        "conversion_types": [c[1] for c in conversions] if conversions else None,
        "conversion_ts": [at(c[2]) for c in conversions] if conversions else None,
        "conversion_attributed": [c[3] for c in conversions] if conversions else None,
    }


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)


MIXED = _table([
    _row("both", [("ad1", "adv1", 30.0), ("ad2", "adv2", 2.0)], [("adv1", "purchase", 5.0, True)]),
    _row("clicks", [("ad3", "adv3", 100.0)], []),
    _row("conversions", [], [("adv4", "lead", 50.0, False), ("adv5", "install", 1.0, True)]),
])


# --- shapes and layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", variant_names())
def test_every_variant_gives_embeddings_of_its_documented_shape(variant):
    batch = tensorize(_table(synthetic_rows(37, seed=1).to_pylist()), SMALL)
    out = _model(variant)(batch)
    click_dim, conversion_dim = embedding_dims(replace(SMALL, variant=variant))
    assert out.click.shape == (37, click_dim)
    assert (out.conversion is None) == (conversion_dim is None)
    if conversion_dim:
        assert out.conversion.shape == (37, conversion_dim)
    assert click_dim + (conversion_dim or 0) == 2 * SMALL.dim  # every variant hands the ranker 2 * dim


def test_tensorize_lays_out_events_oldest_first_with_time_features():
    batch = tensorize(MIXED, SMALL)
    assert batch.click_ad.shape == (3, 2) and batch.conversion_advertiser.shape == (3, 2)
    assert batch.click_mask.tolist() == [[True, True], [True, False], [False, False]]
    assert batch.conversion_mask.tolist() == [[True, False], [False, False], [True, True]]
    age, gap = batch.click_time[0, :, 0], batch.click_time[0, :, 1]
    assert torch.allclose(age, torch.log1p(torch.tensor([30.0, 2.0])))
    assert torch.allclose(gap, torch.log1p(torch.tensor([0.0, 28.0])))
    # counts, hours since the last event, has events / attributed share
    assert torch.allclose(batch.click_stats[0], torch.tensor([math.log1p(2), math.log1p(2.0), 1.0]))
    assert batch.click_stats[2].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(batch.conversion_stats[2], torch.tensor([math.log1p(2), 0.5, math.log1p(1.0), 1.0]))
    assert batch.conversion_attributed[2].tolist() == [1, 2]
    assert (batch.click_ad[batch.click_mask] > 0).all() and (batch.click_ad[~batch.click_mask] == 0).all()


def test_sequences_longer_than_the_cap_keep_their_most_recent_events():
    cfg = replace(SMALL, max_clicks=2)
    rows = _table([_row("u", [("a1", "v", 40.0), ("a2", "v", 30.0), ("a3", "v", 20.0)], [])])
    batch = tensorize(rows, cfg)
    expected = torch.from_numpy(bucketize(pa.array(["a2", "a3"]), cfg.ad_buckets))
    assert batch.click_ad[0].tolist() == expected.tolist()
    assert batch.click_stats[0, 0].item() == pytest.approx(math.log1p(3))  # the count is the whole row's


# --- padding, empty streams ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", variant_names())
def test_extra_padding_never_changes_the_outputs(variant):
    model = _model(variant)
    rows = _table(synthetic_rows(50, seed=2).to_pylist())
    tight = model(tensorize(rows, SMALL))
    padded = model(tensorize(rows, SMALL, pad_to_caps=True))
    assert tensorize(rows, SMALL, pad_to_caps=True).click_ad.shape[1] == SMALL.max_clicks
    torch.testing.assert_close(padded.click, tight.click, atol=1e-5, rtol=1e-5)
    if tight.conversion is not None:
        torch.testing.assert_close(padded.conversion, tight.conversion, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", variant_names())
def test_a_row_is_embedded_the_same_whatever_else_is_in_its_batch(variant):
    model = _model(variant)
    rows = _table(synthetic_rows(40, seed=3).to_pylist())
    whole = model(tensorize(rows, SMALL))
    alone = model(tensorize(rows.slice(7, 1), SMALL))
    torch.testing.assert_close(alone.click[0], whole.click[7], atol=1e-5, rtol=1e-5)


def test_users_with_no_conversion_or_no_click_get_finite_embeddings():
    out = _model("duet")(tensorize(MIXED, SMALL))
    assert torch.isfinite(out.click).all() and torch.isfinite(out.conversion).all()


def test_a_user_without_conversions_gets_a_conversion_embedding_that_reads_the_clicks():
    # No conversion in either row: the conversion embedding can only come from the clicks it attends to.
    rows = _table([_row("a", [("ad1", "adv1", 3.0)], []), _row("b", [("ad9", "adv9", 300.0)] * 5, [])])
    out = _model("duet")(tensorize(rows, SMALL))
    assert not torch.allclose(out.conversion[0], out.conversion[1], atol=1e-4)


# --- attention fast path against a naive reference ------------------------------------------------------


def naive_attention(q, k, v, key_mask, dropout=0.0):
    """softmax(Q K^T / sqrt(d) with padded keys at -inf) V, written out."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def test_fused_attention_equals_the_naive_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    mask = torch.rand(3, 7) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(attention.attend(q, k, v, mask, 0.0), naive_attention(q, k, v, mask),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", variant_names())
def test_whole_models_agree_with_the_naive_attention(variant, monkeypatch):
    model = _model(variant)
    batch = tensorize(_table(synthetic_rows(30, seed=4).to_pylist()), SMALL)
    fast = model(batch)
    monkeypatch.setattr(attention, "attend", naive_attention)
    slow = model(batch)
    torch.testing.assert_close(fast.click, slow.click, atol=1e-5, rtol=1e-4)


# --- checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", variant_names())
def test_a_reloaded_checkpoint_reproduces_embeddings_exactly(variant, tmp_path):
    model = _model(variant)
    cfg = PretrainConfig(model=replace(SMALL, variant=variant))
    saved = checkpoint.save(str(tmp_path), model, cfg, {"trained_at": "x"})
    assert saved.model_version.startswith(f"{variant}-") and len(saved.model_version) == len(variant) + 8
    loaded, record = checkpoint.load(str(tmp_path), saved.model_version)
    assert record.config == cfg
    batch = tensorize(_table(synthetic_rows(20, seed=5).to_pylist()), SMALL)
    a, b = model(batch), loaded(batch)
    assert torch.equal(a.click, b.click)
    assert (a.conversion is None and b.conversion is None) or torch.equal(a.conversion, b.conversion)
    # The same model saves to the same version; other weights to another.
    assert checkpoint.save(str(tmp_path), model, cfg, {}).model_version == saved.model_version
    other = checkpoint.save(str(tmp_path), _model(variant, seed=1), cfg, {"trained_at": "y"})
    assert other.model_version != saved.model_version


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['DUET_EXPLOIT_MARKER']}",))


def test_loading_never_unpickles_a_crafted_checkpoint(tmp_path, monkeypatch):
    model = _model("duet")
    saved = checkpoint.save(str(tmp_path), model, PretrainConfig(model=SMALL), {})
    marker = tmp_path / "exploited"
    monkeypatch.setenv("DUET_EXPLOIT_MARKER", str(marker))
    folder = tmp_path / "_models" / saved.model_version
    config = json.loads((folder / "config.json").read_text())["config"]
    for payload in (pickle.dumps(_Exploit()), _torch_save_bytes({"w": _Exploit()}, tmp_path)):
        # the bytes as every engine gets them (a Spark worker receives them broadcast, not from the folder)
        with pytest.raises(DuetError, match="not a safetensors checkpoint"):
            checkpoint.model_from_bytes(config, payload)
        (folder / "model.safetensors").write_bytes(payload)
        with pytest.raises(DuetError, match="does not match its name"):   # refused before it is parsed
            checkpoint.load(str(tmp_path), saved.model_version)
    assert not marker.exists()


def _torch_save_bytes(obj, folder) -> bytes:
    path = folder / "pickled.pt"
    torch.save(obj, path)
    return path.read_bytes()


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    saved = checkpoint.save(str(tmp_path), _model("duet"), PretrainConfig(model=SMALL), {})
    folder = tmp_path / "_models" / saved.model_version
    config = json.loads((folder / "config.json").read_text())["config"]
    config["model"]["dim"] = 32
    with pytest.raises(DuetError, match="does not fit its config"):
        checkpoint.model_from_bytes(config, (folder / "model.safetensors").read_bytes())


# --- configs --------------------------------------------------------------------------------------------


def test_configs_round_trip_and_reject_unknown_keys():
    cfg = PretrainConfig(model=replace(SMALL, variant="shared"), train=TrainConfig(epochs=3))
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(DuetError, match="unknown key.*click_layer"):
        from_dict(PretrainConfig, {"model": {"click_layer": 3}})
    with pytest.raises(DuetError, match="unknown variant"):
        ModelConfig(variant="dual")
    with pytest.raises(DuetError, match="multiple of heads"):
        ModelConfig(dim=30, heads=4)


def test_baselines_match_duets_parameter_count_and_merged_its_flops_within_ten_percent():
    counts = parameter_report(ModelConfig())
    duet = counts["duet"]
    for variant in ("shared", "click_only"):
        assert abs(counts[variant]["encoder"] - duet["encoder"]) / duet["encoder"] < 0.10, counts
    assert abs(counts["merged"]["flops_per_user"] - duet["flops_per_user"]) / duet["flops_per_user"] < 0.10
    # the counter sees the attention: twice the layers over the same tokens, about twice the FLOPs
    deeper = parameter_report(ModelConfig(merged_layers=6))["merged"]["flops_per_user"]
    assert 1.8 < deeper / counts["merged"]["flops_per_user"] < 2.1


def test_the_merged_baseline_reads_only_the_most_recent_events_of_either_kind():
    hours = torch.tensor([[5.0, 1.0, 9.0, 0.0, 3.0, 2.0]])   # 4 click slots (last is padding), 2 conversions
    mask = torch.tensor([[True, True, True, False, True, True]])
    assert sorted(most_recent(hours, mask, 3)[0].tolist()) == [1, 4, 5]
    assert most_recent(hours, mask, 10).shape == (1, 6)       # never more slots than there are
    # A conversion older than the budget's clicks changes nothing (not even the summary's counts, the same
    # here); within the budget, it does.
    cfg = replace(SMALL, variant="merged", merged_tokens=3)
    torch.manual_seed(0)
    model = UserModel(cfg, ObjectiveConfig()).eval()
    batch = full_batch(cfg, users=1)
    batch.click_time[0, :, 0] = torch.linspace(0.1, 1.0, cfg.max_clicks)    # clicks 0.1 .. 1 (log1p hours)
    batch.conversion_time[0, :, 0] = 5.0                                     # conversions all older
    other = UserBatch(**{**batch.as_tensors(),
                         "conversion_advertiser": batch.conversion_advertiser % 7 + 1})
    with torch.no_grad():
        assert torch.equal(model(batch).click, model(other).click)
        batch.conversion_time[0, 0, 0] = 0.0                                 # one conversion now the newest
        other.conversion_time[0, 0, 0] = 0.0
        assert not torch.equal(model(batch).click, model(other).click)


# --- hashing --------------------------------------------------------------------------------------------


def test_ids_hash_the_same_everywhere():
    # 64-bit FNV-1a reference values
    assert fnv1a64(pa.array(["", "a", "foobar"])).tolist() == [
        0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    buckets = bucketize(pa.chunked_array([["adv1", "adv2"], ["adv1", None]]), 16)
    assert buckets[0] == buckets[2] and ((buckets >= 1) & (buckets <= 15)).all()
    assert buckets[3] == bucketize(pa.array([""]), 16)[0]


# --- objectives, training -----------------------------------------------------------------------------


def test_in_batch_softmax_masks_a_users_other_positives():
    torch.manual_seed(0)
    head = AdvertiserRetrieval(4, torch.nn.Embedding(10, 4), temperature=1.0)
    users = torch.randn(2, 4)
    targets = torch.tensor([[1, 2], [3, 0]])
    # Reference: for each (user, positive), softmax over the batch's candidates {1, 2, 3} minus the
    # user's other positives, with each candidate's log share of the pairs subtracted.
    u = F.normalize(head.user(users), dim=-1)
    v = F.normalize(head.items(torch.tensor([1, 2, 3])), dim=-1)
    logits = u @ v.T + head.bias[torch.tensor([1, 2, 3])] - math.log(1 / 3)
    losses = [F.cross_entropy(logits[0, [0, 2]][None], torch.tensor([0])),   # user 0, positive 1: 2 masked
              F.cross_entropy(logits[0, [1, 2]][None], torch.tensor([0])),   # user 0, positive 2: 1 masked
              F.cross_entropy(logits[1][None], torch.tensor([2]))]
    assert head.loss(users, targets).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    assert head.loss(users, torch.zeros(2, 2, dtype=torch.long)).item() == 0.0


def _shards(tmp_path, name: str, rows: int, seed: int, cfg: ModelConfig):
    table = synthetic_rows(rows, seed=seed)
    for field in synthetic_targets(rows, seed).schema:
        table = table.append_column(field, synthetic_targets(rows, seed).column(field.name))
    writer = ShardWriter(tmp_path / name, name, shard_rows=64)
    for start in range(0, rows, 50):  # a shard is written once 64 rows are pending
        part = table.slice(start, 50)
        writer.add(tensorize(part, cfg, pad_to_caps=True), tensorize_targets(part, cfg, 8))
    return writer.close()


def test_training_is_deterministic_for_a_seed_on_cpu(tmp_path):
    cfg = replace(SMALL, max_clicks=16, max_conversions=4)
    train, valid = _shards(tmp_path, "train", 200, 1, cfg), _shards(tmp_path, "valid", 60, 2, cfg)
    assert len(train.paths) == 2 and train.rows == 200
    budget = TrainConfig(epochs=2, batch_size=32, device="cpu", seed=7)
    states = []
    for _ in range(2):
        torch.manual_seed(123)  # a different global state must not matter: fit seeds everything it uses
        model = UserModel(cfg, ObjectiveConfig())
        result = fit(model, train, valid, budget, log=lambda _: None)
        states.append(model.state_dict())
        assert len(result.history) == 2 and result.device == "cpu"
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_retrieval_gradients_are_bitwise_repeatable_on_cpu():
    # At the sizes of real batches (thousands of positives), a backward through advanced indexing
    # (``x[rows]``: index_put_ with accumulation) summed in a thread-dependent order on CPU, so two runs
    # of the same pre-training gave different models; the small test above was below that threshold.
    torch.manual_seed(0)
    head = AdvertiserRetrieval(64, torch.nn.Embedding(1024, 64), temperature=0.1)
    users = torch.randn(256, 64, requires_grad=True)
    targets = torch.randint(0, 1024, (256, 32))

    def gradients() -> list[torch.Tensor]:
        users.grad = None
        head.zero_grad()
        head.loss(users, targets).backward()
        return [users.grad.clone(), *(p.grad.clone() for p in head.parameters())]

    first = gradients()
    for _ in range(30):
        assert all(torch.equal(a, b) for a, b in zip(first, gradients(), strict=True))

def test_validation_loss_falls_when_there_is_something_to_learn(tmp_path):
    # Targets are the user's own clicked advertisers: a model that reads the clicks can learn them.
    cfg = replace(SMALL, max_clicks=16, max_conversions=4)
    rows = synthetic_rows(600, seed=5)
    table = rows.append_column("target_click_advertisers", rows.column("click_advertiser_ids")) \
        .append_column("target_conversion_advertisers", rows.column("conversion_advertiser_ids")) \
        .append_column("target_converts", pa.compute.greater(
            pa.compute.fill_null(pa.compute.list_value_length(rows.column("conversion_types")), 0), 0))
    train_w, valid_w = ShardWriter(tmp_path, "t", 10_000), ShardWriter(tmp_path, "v", 10_000)
    train_w.add(tensorize(table.slice(0, 500), cfg, True), tensorize_targets(table.slice(0, 500), cfg, 8))
    valid_w.add(tensorize(table.slice(500), cfg, True), tensorize_targets(table.slice(500), cfg, 8))
    result = fit(UserModel(cfg, ObjectiveConfig()), train_w.close(), valid_w.close(),
                 TrainConfig(epochs=6, batch_size=64, device="cpu", patience=6), log=lambda _: None)
    losses = [e.valid["click"] for e in result.history]
    assert losses[-1] < 0.9 * losses[0], losses


# --- examples and targets -----------------------------------------------------------------------------


def test_targets_come_from_after_the_snapshot_and_only_reported_conversions():
    h = timedelta(days=2)
    clicks = pa.Table.from_pylist([
        {"user_id": "a", "ad_ids": ["x"], "advertiser_ids": ["v1"], "click_ts": [T - timedelta(hours=1)]}])
    conversions = pa.Table.from_pylist([
        {"user_id": "b", "advertiser_ids": ["v7"], "conversion_types": ["lead"],
         "conversion_ts": [T - timedelta(days=1)], "attributed": [False]}])
    inputs = join_sequences(clicks, conversions, T)
    assert inputs.column("user_id").to_pylist() == ["a", "b"]
    assert inputs.column("conversion_types").to_pylist() == [None, ["lead"]]
    future_clicks = pa.Table.from_pylist([
        {"user_id": "a", "advertiser_ids": ["v1", "v2", "v3", "v2"],
         "click_ts": [T - timedelta(hours=1), T, T + timedelta(hours=5), T + timedelta(hours=6)]}])
    cutoff_conversions = pa.Table.from_pylist([
        {"user_id": "a", "advertiser_ids": ["v1", "v4", "v5"],
         # before T (a feature, not a target), inside the horizon, after the horizon (reported late)
         "conversion_ts": [T - timedelta(hours=2), T + timedelta(days=1), T + h + timedelta(hours=1)]}])
    out = add_targets(inputs, future_clicks, cutoff_conversions, T, h)
    assert out.column("target_click_advertisers").to_pylist() == [["v3", "v2"], []]  # oldest latest first
    assert out.column("target_conversion_advertisers").to_pylist() == [["v4"], []]
    assert out.column("target_converts").to_pylist() == [True, False]


def test_probe_and_metrics_on_known_cases():
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(torch.tensor([1.0, 1.0]), torch.tensor([0, 1])) == pytest.approx(0.5)
    assert normalized_entropy(np.full(10, 0.3), np.array([1, 1, 1] + [0] * 7)) == pytest.approx(1.0)
    torch.manual_seed(0)
    x = torch.randn(400, 3)
    y = (x[:, 0] + 0.3 * torch.randn(400) > 0).float()
    informed = logistic_probe(x[:300], y[:300], x[300:], y[300:])
    blind = logistic_probe(x[:300, 1:], y[:300], x[300:, 1:], y[300:])
    assert informed["auc"] > 0.9 and informed["ne"] < 0.6 and blind["ne"] > 0.9


# --- the import path ---------------------------------------------------------------------------------------


def test_the_encoders_import_and_run_with_torch_alone():
    code = (
        "import sys, encoders.batch, encoders.variants, encoders.train, encoders.inference, "
        "encoders.checkpoint, encoders.shards, encoders.evaluate, encoders.examples\n"
        "heavy = {'pyspark', 'feast', 'deltalake', 'great_expectations', 'pandas', 'delta'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_user_batches_move_and_select_as_one():
    batch = tensorize(MIXED, SMALL)
    picked = batch.select(torch.tensor([2, 0]))
    assert picked.conversion_stats[0].tolist() == batch.conversion_stats[2].tolist()
    twice = UserBatch.concat([picked, picked])
    assert isinstance(twice, UserBatch) and len(twice) == 4
