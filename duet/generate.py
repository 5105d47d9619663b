"""Synthetic click and conversion events in the input layout (``duet generate``).

The generator is a latent user model, so that evaluations have something true to find:

* **Activity** is heavy-tailed: each user's click rate is ``clicks_per_day * a_u`` with
  ``a_u ~ LogNormal`` (mean 1), and clicks per user-day are Poisson. Hours follow a diurnal profile.
* **Click interests** ``theta_u ~ Dirichlet(alpha)`` over ``topics``; a click picks a topic from
  ``theta_u``, an advertiser of that topic by Zipf popularity, and one of its ads by Zipf popularity.
* **Conversion intent** has a part that clicks show and a part they do not. A click on topic ``t``
  converts with probability proportional to ``exp(v_ut + signal * h_ut)``, where
  ``v_ut = 0.5 log(K theta_ut + 0.1)`` grows with the user's click share (visible in clicks) and
  ``h_ut = 0.8 s_u + 0.7 log(K eta_ut + 0.1)`` uses a hidden propensity ``s_u ~ N(0,1)`` and a hidden
  topic intent ``eta_u ~ Dirichlet(alpha)``. Probabilities are scaled so that ``cvr`` of clicks convert
  (default 2%). ``--conversion-signal`` is ``signal``; at 0,
  conversions depend only on what clicks show, which makes a control for evaluations.
* **Unattributed conversions** (default 30% of all conversions) come from the same per-user, per-topic
  conversion propensity, at random times, with no click id: like attributed ones they reveal ``s_u``
  and ``eta_u`` when ``signal > 0``.
* **Settings for what DUET targets** (``SETTINGS["duet-targeted"]``, ``duet generate --setting``): long
  click histories against few conversions (``clicks_per_day`` up, ``cvr`` down); ``unattributed="lost"``:
  an unattributed conversion is an attributed one whose click id was lost (same advertiser, after its
  click; the click's label stays 0), instead of an independent draw; ``interest_drift``: each week a user's
  click interests move by that share towards a fresh draw, ``theta_w = (1 - d) theta_{w-1} + d Dir(alpha)``,
  while the conversion intent (``s_u``, ``eta_u``) persists, so weeks-old conversions say what recent
  clicks no longer show. The defaults leave all three off and the files byte for byte as before.
* **Delays**: conversion delay ~ LogNormal with median 20 h (about half within a day), capped at 30 days;
  report delay ~ LogNormal with median 2 h, from 1 minute to 14 days.

**Ground truth** (``duet generate --truth DIR``, a folder apart from the events, never read by the pipeline's
stages): ``users.parquet`` (each user's ``activity``, ``theta``, ``eta``, ``propensity`` and the chunk's
probability ``scale``: a click on topic ``t`` converts with ``min(scale * exp(log_rate_ut), 0.5)``),
``advertisers.parquet`` (each advertiser's topic) and ``generator.json`` (the config). ``duet.ceiling``
turns them into the oracle and Bayes NE a ranker can at best reach.

Users are generated in chunks and each chunk is appended to the Parquet files as row groups, so memory is
bounded by the chunk, not the data set (20M+ clicks is fine). The output is a pure function of the
config: the same seed gives the same files. Timestamps are written as microseconds in UTC.

This module must never start Spark: it produces *input* for the pipeline, like an event collector would.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.arrow_schemas import CLICKS_ARROW, CONVERSIONS_ARROW
from core.errors import DuetError
from core.files import atomic_path, write_atomic

_DAY_S = 86_400
# Share of a day's clicks in each UTC hour: quiet nights, evening peak.
_DIURNAL = np.array(
    [2, 1.5, 1, 1, 1, 1.5, 2.5, 4, 5, 5.5, 5.5, 6, 6, 5.5, 5.5, 5.5, 6, 6.5, 7.5, 8.5, 8.5, 7, 5, 3.5]
)
# (median s, sigma, lowest s, highest s) of the log-normal delays, shared with ``duet.ceiling``.
CONVERSION_DELAY = (20 * 3600, 1.6, 1, 30 * _DAY_S)
REPORT_DELAY = (7200, 2.0, 60, 14 * _DAY_S)
_CONVERSION_TYPES = np.array(["purchase", "add_to_cart", "lead", "install"])
_CONVERSION_TYPE_P = np.array([0.6, 0.25, 0.1, 0.05])


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything the synthetic data depends on. Same config, same files."""

    users: int = 2000
    days: int = 14
    start: date = date(2026, 1, 5)
    seed: int = 0
    conversion_signal: float = 1.0
    unattributed_share: float = 0.3
    clicks_per_day: float = 4.0
    activity_sigma: float = 1.0
    cvr: float = 0.02
    topics: int = 16
    topic_alpha: float = 0.3
    advertisers: int = 200
    ads_per_advertiser: int = 25
    chunk_users: int = 20_000
    unattributed: str = "independent"   # or "lost": attributed conversions whose click id was lost
    interest_drift: float = 0.0         # weekly share of click interests replaced by a fresh draw

    # The generator's fixed constants, named once so that ``duet.ceiling`` computes with the same ones.
    VISIBLE_WEIGHT = 0.5       # v_ut = 0.5 log(K theta_ut + 0.1)
    PROPENSITY_WEIGHT = 0.8    # h_ut = 0.8 s_u + 0.7 log(K eta_ut + 0.1)
    HIDDEN_TOPIC_WEIGHT = 0.7
    P_CAP = 0.5                # no click converts with a higher probability

    def __post_init__(self) -> None:
        checks = {
            "users": self.users >= 1,
            "days": self.days >= 1,
            "conversion_signal": self.conversion_signal >= 0,
            "unattributed_share": 0 <= self.unattributed_share < 1,
            "clicks_per_day": self.clicks_per_day > 0,
            "cvr": 0 < self.cvr < 0.5,
            "topics": self.topics >= 1,
            "advertisers": self.advertisers >= self.topics,
            "ads_per_advertiser": self.ads_per_advertiser >= 1,
            "chunk_users": self.chunk_users >= 1,
            "unattributed": self.unattributed in ("independent", "lost"),
            "interest_drift": 0 <= self.interest_drift <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise DuetError(f"invalid generator setting(s): {', '.join(bad)}", fields=bad)


# Named settings: overrides of ``GeneratorConfig``'s defaults (``duet generate --setting``, the ablation's
# benchmark). "duet-targeted" is what the DUET paper's design is for (module docstring).
SETTINGS: dict[str, dict] = {
    "default": {},
    "duet-targeted": {"clicks_per_day": 10.0, "cvr": 0.01, "unattributed": "lost", "unattributed_share": 0.3,
                      "interest_drift": 0.5},
}


def setting(name: str, **overrides) -> GeneratorConfig:
    """A named setting's ``GeneratorConfig`` with ``overrides`` (users, days, seed, ...) on top."""
    if name not in SETTINGS:
        raise DuetError(f"unknown generator setting {name!r}: use one of {', '.join(SETTINGS)}")
    return GeneratorConfig(**{**SETTINGS[name], **overrides})


@dataclass(frozen=True)
class GeneratorSummary:
    clicks: int
    conversions: int
    attributed_conversions: int
    unattributed_conversions: int
    clicks_path: str
    conversions_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _zipf(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers, built in Arrow (Python strings would dominate the run time)."""
    digits = pc.utf8_lpad(pa.array(numbers, pa.int64()).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


class _Catalog:
    """Advertisers (each in one topic, Zipf-popular within it) and their ads."""

    def __init__(self, cfg: GeneratorConfig, rng: np.random.Generator) -> None:
        self.topic_of_adv = np.arange(cfg.advertisers) % cfg.topics
        rng.shuffle(self.topic_of_adv)
        self.advs_by_topic = [np.flatnonzero(self.topic_of_adv == t) for t in range(cfg.topics)]
        self.adv_p_by_topic = [_zipf(len(a)) for a in self.advs_by_topic]
        self.ad_p = _zipf(cfg.ads_per_advertiser)
        self.ads_per_advertiser = cfg.ads_per_advertiser

    def advertisers_for(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(topics), np.int64)
        for t, advs in enumerate(self.advs_by_topic):
            idx = np.flatnonzero(topics == t)
            if len(idx):
                out[idx] = rng.choice(advs, size=len(idx), p=self.adv_p_by_topic[t])
        return out

    def ads_for(self, advertisers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return advertisers * self.ads_per_advertiser + rng.choice(
            self.ads_per_advertiser, size=len(advertisers), p=self.ad_p
        )


def _sample_topics(weights: np.ndarray, owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One topic per event, drawn from its owner's row of ``weights`` (rows sum to 1)."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(owner))[:, None]
    return np.minimum((u > cdf[owner]).sum(axis=1), weights.shape[1] - 1)


def _lognormal_seconds(rng, n, median_s, sigma, lo_s, hi_s) -> np.ndarray:
    return np.clip(np.exp(np.log(median_s) + sigma * rng.standard_normal(n)), lo_s, hi_s)


def _chunk(cfg: GeneratorConfig, catalog: _Catalog, first_user: int, n_users: int,
           first_click: int, first_conversion: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    k = cfg.topics
    start_s = int(datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC).timestamp())
    span_s = cfg.days * _DAY_S

    # Latent users.
    sigma = cfg.activity_sigma
    activity = rng.lognormal(-sigma**2 / 2, sigma, n_users)
    theta = rng.dirichlet(np.full(k, cfg.topic_alpha), n_users)
    eta = rng.dirichlet(np.full(k, cfg.topic_alpha), n_users)
    propensity = rng.standard_normal(n_users)
    weeks = (cfg.days + 6) // 7
    if cfg.interest_drift > 0:   # click interests per (user, week); the conversion intent stays
        thetas = [theta]
        for _ in range(weeks - 1):
            fresh = rng.dirichlet(np.full(k, cfg.topic_alpha), n_users)
            thetas.append((1 - cfg.interest_drift) * thetas[-1] + cfg.interest_drift * fresh)
        theta_uw = np.stack(thetas, axis=1).reshape(n_users * weeks, k)   # row u * weeks + w
    log_rate = log_rates(cfg, theta, eta, propensity)  # (users, topics), up to a constant

    # Clicks: Poisson per user-day, diurnal hours.
    n_clicks = rng.poisson(cfg.clicks_per_day * activity * cfg.days)
    owner = np.repeat(np.arange(n_users), n_clicks)
    day = rng.integers(0, cfg.days, len(owner))
    hour = rng.choice(24, size=len(owner), p=_DIURNAL / _DIURNAL.sum())
    click_s = start_s + day * _DAY_S + hour * 3600 + rng.integers(0, 3600, len(owner))
    click_us = click_s * 1_000_000 + rng.integers(0, 1_000_000, len(owner))
    order = np.lexsort((click_us, owner))
    owner, click_us = owner[order], click_us[order]
    if cfg.interest_drift > 0:
        week = (click_us // 1_000_000 - start_s) // (7 * _DAY_S)
        row = owner * weeks + week
        topic = _sample_topics(theta_uw, row, rng)
        eta_uw, s_uw = np.repeat(eta, weeks, axis=0), np.repeat(propensity, weeks)
        click_log_rate = log_rates(cfg, theta_uw, eta_uw, s_uw)[row, topic]
    else:
        topic = _sample_topics(theta, owner, rng)
        click_log_rate = log_rate[owner, topic]
    adv = catalog.advertisers_for(topic, rng)
    ad = catalog.ads_for(adv, rng)

    # Attributed conversions: scale exp(log_rate) so that cfg.cvr of this chunk's clicks convert.
    score = np.exp(click_log_rate)
    scale = cfg.cvr / score.mean() if len(score) else 1.0
    p = np.minimum(score * scale, cfg.P_CAP)
    converted = rng.random(len(owner)) < p
    conv_click = np.flatnonzero(converted)
    delay_s = _lognormal_seconds(rng, len(conv_click), *CONVERSION_DELAY)
    att_conv_us = click_us[conv_click] + (delay_s * 1e6).astype(np.int64)

    # Unattributed conversions: same per-user topic propensity, share-matched counts, random times; or
    # ("lost") converted clicks whose click id is dropped: same advertiser, after the click.
    expected_att = np.bincount(owner, weights=p, minlength=n_users)
    ratio = cfg.unattributed_share / (1 - cfg.unattributed_share)
    n_un = rng.poisson(expected_att * ratio) if cfg.unattributed == "independent" else np.zeros(n_users, int)
    un_owner = np.repeat(np.arange(n_users), n_un)
    topic_w = theta * np.exp(log_rate)
    topic_w /= topic_w.sum(axis=1, keepdims=True)
    un_topic = _sample_topics(topic_w, un_owner, rng)
    un_adv = catalog.advertisers_for(un_topic, rng)
    un_conv_us = (start_s + rng.integers(0, span_s, len(un_owner))) * 1_000_000 + rng.integers(
        0, 1_000_000, len(un_owner)
    )

    c_owner = np.concatenate([owner[conv_click], un_owner])
    c_adv = np.concatenate([adv[conv_click], un_adv])
    c_ts = np.concatenate([att_conv_us, un_conv_us])
    c_click = np.concatenate([first_click + conv_click, np.full(len(un_owner), -1)])
    if cfg.unattributed == "lost":
        lost = rng.random(len(conv_click)) < cfg.unattributed_share
        c_click[:len(conv_click)][lost] = -1
    order = np.lexsort((c_ts, c_owner))
    c_owner, c_adv, c_ts, c_click = c_owner[order], c_adv[order], c_ts[order], c_click[order]
    report_us = c_ts + (_lognormal_seconds(rng, len(c_ts), *REPORT_DELAY) * 1e6).astype(np.int64)
    ctype = rng.choice(len(_CONVERSION_TYPES), size=len(c_ts), p=_CONVERSION_TYPE_P)
    has_value = ctype <= 1  # purchases and carts carry a value; leads and installs do not
    value = np.round(rng.lognormal(np.log(40.0), 1.0, len(c_ts)), 2)

    users = first_user + np.arange(n_users)
    clicks = pa.table(
        {
            "click_id": _ids("c", first_click + np.arange(len(owner)), 10),
            "user_id": _ids("u", users[owner], 7),
            "ad_id": _ids("ad", ad, 6),
            "advertiser_id": _ids("adv", adv, 4),
            "click_ts": pa.array(click_us, pa.int64()).cast(CLICKS_ARROW.field("click_ts").type),
        },
        schema=CLICKS_ARROW,
    )
    attributed = c_click >= 0
    att_ids = _ids("c", np.where(attributed, c_click, 0), 10)
    conversions = pa.table(
        {
            "conversion_id": _ids("cv", first_conversion + np.arange(len(c_ts)), 10),
            "user_id": _ids("u", users[c_owner], 7),
            "advertiser_id": _ids("adv", c_adv, 4),
            "conversion_type": pa.array(_CONVERSION_TYPES[ctype]),
            "conversion_ts": pa.array(c_ts, pa.int64()).cast(CONVERSIONS_ARROW.field("conversion_ts").type),
            "report_ts": pa.array(report_us, pa.int64()).cast(CONVERSIONS_ARROW.field("report_ts").type),
            "attributed_click_id": pc.if_else(pa.array(attributed), att_ids, pa.scalar(None, pa.string())),
            "value": pa.array(np.where(has_value, value, np.nan), mask=~has_value),
        },
        schema=CONVERSIONS_ARROW,
    )
    truth = pa.table({
        "user_id": _ids("u", users, 7),
        "activity": pa.array(activity, pa.float64()),
        "theta": pa.array(list(theta), pa.list_(pa.float64())),
        "eta": pa.array(list(eta), pa.list_(pa.float64())),
        "propensity": pa.array(propensity, pa.float64()),
        "scale": pa.array(np.full(n_users, scale), pa.float64()),
    }, schema=TRUTH_USERS_ARROW)
    return clicks, conversions, truth


def log_rates(cfg: GeneratorConfig, theta: np.ndarray, eta: np.ndarray, propensity: np.ndarray
              ) -> np.ndarray:
    """``log_rate_ut = v_ut + signal * h_ut`` for users' latents (theta, eta: (..., K); propensity: (...,)).

    A click on topic ``t`` converts with ``min(scale * exp(log_rate_ut), P_CAP)``."""
    k = theta.shape[-1]
    visible = cfg.VISIBLE_WEIGHT * np.log(k * theta + 0.1)
    hidden = cfg.PROPENSITY_WEIGHT * propensity[..., None] + cfg.HIDDEN_TOPIC_WEIGHT * np.log(k * eta + 0.1)
    return visible + cfg.conversion_signal * hidden


TRUTH_USERS_ARROW = pa.schema([
    ("user_id", pa.string()), ("activity", pa.float64()), ("theta", pa.list_(pa.float64())),
    ("eta", pa.list_(pa.float64())), ("propensity", pa.float64()), ("scale", pa.float64())])


def _write_truth(cfg: GeneratorConfig, catalog: _Catalog, truth: list[pa.Table], truth_dir: Path) -> None:
    """The latents beside (never among) the events: a folder of its own, each file renamed when whole."""
    truth_dir.mkdir(parents=True, exist_ok=True)
    advertisers = pa.table({"advertiser_id": _ids("adv", np.arange(cfg.advertisers), 4),
                            "topic": pa.array(catalog.topic_of_adv, pa.int64())})
    for name, table in (("users.parquet", pa.concat_tables(truth)), ("advertisers.parquet", advertisers)):
        with atomic_path(truth_dir / name) as tmp:
            pq.write_table(table, tmp)
    config = {**asdict(cfg), "start": cfg.start.isoformat()}
    write_atomic(truth_dir / "generator.json", json.dumps(config, indent=1, sort_keys=True))


def read_truth(truth_dir: str | os.PathLike) -> tuple[GeneratorConfig, pa.Table, np.ndarray]:
    """``(config, users, topic of each advertiser number)`` from a ``--truth`` folder."""
    folder = Path(truth_dir)
    if not (folder / "generator.json").is_file():
        raise DuetError(f"{folder} holds no generator truth (write it with `duet generate --truth DIR`)")
    raw = json.loads((folder / "generator.json").read_text())
    cfg = GeneratorConfig(**{**raw, "start": date.fromisoformat(raw["start"])})
    users = pq.read_table(folder / "users.parquet")
    advertisers = pq.read_table(folder / "advertisers.parquet")
    return cfg, users, advertisers.column("topic").to_numpy()


def write_landing(clicks: str | os.PathLike, conversions: str | os.PathLike,
                  landing: str | os.PathLike) -> list[str]:
    """Split generated files into a landing folder (``duet.daily.Landing``), one folder per UTC day of
    reports: the clicks made that day, the conversions reported that day, then its ``_SUCCESS`` file;
    return the days written. What a day's delivery would be, for ``duet daily`` to ingest."""
    import pyarrow.compute as pc

    from duet.daily import SUCCESS_MARKER

    tables = {"clicks": (pq.read_table(clicks), "click_ts"),
              "conversions": (pq.read_table(conversions), "report_ts")}
    days_of = {kind: pc.cast(pc.floor_temporal(t[column], unit="day"), pa.timestamp("us", "UTC"))
               for kind, (t, column) in tables.items()}
    days = sorted(set().union(*(set(d.to_pylist()) for d in days_of.values())))
    for day in days:
        folder = Path(landing, day.date().isoformat())
        folder.mkdir(parents=True, exist_ok=True)
        for kind, (table, _) in tables.items():
            rows = table.filter(pc.equal(days_of[kind], pa.scalar(day, pa.timestamp("us", "UTC"))))
            with atomic_path(folder / f"{kind}.parquet") as tmp:
                pq.write_table(rows, tmp)
        (folder / SUCCESS_MARKER).touch()
    return [d.date().isoformat() for d in days]


def generate(cfg: GeneratorConfig, out_dir: str | os.PathLike,
             truth_dir: str | os.PathLike | None = None) -> GeneratorSummary:
    """Write ``clicks.parquet`` and ``conversions.parquet`` under ``out_dir``; return their counts. With
    ``truth_dir``, also each user's latents and each advertiser's topic there (module docstring).

    Files are written under a temporary name and renamed when complete, so a killed run never leaves a
    truncated file behind under the final name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(cfg.seed)
    catalog = _Catalog(cfg, np.random.default_rng(root.spawn(1)[0]))
    chunk_seeds = root.spawn(1 + (cfg.users + cfg.chunk_users - 1) // cfg.chunk_users)[1:]

    paths = {"clicks": out / "clicks.parquet", "conversions": out / "conversions.parquet"}
    n_clicks = n_conv = n_att = 0
    truth: list[pa.Table] = []
    # each file renamed when whole, after its writer closed (the context managers exit in reverse order)
    with atomic_path(paths["clicks"]) as clicks_tmp, atomic_path(paths["conversions"]) as conversions_tmp, \
         pq.ParquetWriter(clicks_tmp, CLICKS_ARROW) as wc, \
         pq.ParquetWriter(conversions_tmp, CONVERSIONS_ARROW) as wv:
        for i, seed in enumerate(chunk_seeds):
            first_user = i * cfg.chunk_users
            n_users = min(cfg.chunk_users, cfg.users - first_user)
            clicks, conversions, users = _chunk(
                cfg, catalog, first_user, n_users, n_clicks, n_conv, np.random.default_rng(seed)
            )
            truth.append(users)
            wc.write_table(clicks, row_group_size=1 << 20)
            wv.write_table(conversions, row_group_size=1 << 20)
            n_clicks += clicks.num_rows
            n_conv += conversions.num_rows
            n_att += conversions.num_rows - conversions["attributed_click_id"].null_count
    if truth_dir is not None:
        _write_truth(cfg, catalog, truth, Path(truth_dir))
    return GeneratorSummary(n_clicks, n_conv, n_att, n_conv - n_att, str(paths["clicks"]),
                            str(paths["conversions"]))
