"""How good a ranker can be on generated data: the oracle and the Bayes NE from the generator's own truth.

``duet generate --truth DIR`` writes each user's latents (``duet.generate``). For clicks labelled as the
contract labels them (an attributed conversion within the attribution window, reported by the label
cutoff), a click by user ``u`` on an advertiser of topic ``t`` at time ``c`` has label 1 with probability

    P(y = 1) = p_ut * G(cutoff - c),   p_ut = min(scale_u * exp(log_rate_ut), P_CAP)
    G(A) = P(D <= window, D + R <= A)   (D: conversion delay, R: report delay, the generator's laws)

* **oracle**: ``p_ut`` from the true latents: no ranker that sees only events can do better;
* **Bayes**: ``E[p_ut | what was reported before the click's snapshot]`` under the generator's model, the
  best any ranker can do from the observable history. The posterior is computed by importance sampling:
  ``theta`` from its exact posterior given the click topics (``Dirichlet(alpha + counts)``), ``eta`` and
  ``s`` from their priors, each sample weighted by the likelihood of the conversions seen so far: an
  attributed conversion reported before the snapshot (``p``), a click without one (``1 - p H(S - c)``,
  ``H`` the law of ``D + R``), and the unattributed conversions reported so far (a Poisson count whose
  mean is ``share / (1 - share) * q(S) * N * sum_t theta_t p_t``, topics drawn in proportion to
  ``theta_t exp(log_rate_t)``; ``N``, the user's clicks over the whole span, is estimated from its click
  rate so far, the one approximation). The catalogue (each advertiser's topic) is taken as known: with
  enough data a ranker learns it.
* the snapshot of a click is the latest daily snapshot at or before it (midnight UTC), as the ranker's
  point-in-time join finds it.

``contract_labels`` labels a generator's files in numpy exactly as ``spark_jobs/examples.py`` does (the
label, maturity), so the ceiling and the ranker's sanity benchmark need no Spark; a test compares the two.

numpy and pyarrow (the NE and AUC are ``ranker.metrics``').
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import DuetError
from core.times import arrow_micros, micros
from duet.generate import CONVERSION_DELAY, REPORT_DELAY, GeneratorConfig, log_rates, read_truth
from ranker import metrics

_US = 1_000_000
_DAY_US = 86_400 * _US


@dataclass(frozen=True)
class CeilingReport:
    """NE of the oracle and the Bayes predictions on the given rows (labels as given)."""

    rows: int
    positives: int
    oracle_ne: float
    bayes_ne: float
    oracle_auc: float
    bayes_auc: float
    samples: int
    median_ess: float      # the importance sampler's effective sample size, median over (user, snapshot)
    conversion_signal: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CeilingResult(CeilingReport):
    """The ceiling on the ablation's test rows, and per variant the share of the gap between ``none`` and
    the Bayes NE that it closes, ``(NE_none - NE_v) / (NE_none - NE_bayes)`` (``gap_closed``; None when
    ``none`` is not above the Bayes NE), and the same against the oracle NE (``gap_closed_oracle``)."""

    gap_closed: dict[str, float | None]
    gap_closed_oracle: dict[str, float | None]

    @classmethod
    def of(cls, bound: CeilingReport, gap_closed: dict[str, float | None],
           gap_closed_oracle: dict[str, float | None]) -> CeilingResult:
        return cls(**asdict(bound), gap_closed=gap_closed, gap_closed_oracle=gap_closed_oracle)


def _delay_draws(law: tuple, n: int, rng: np.random.Generator) -> np.ndarray:
    median_s, sigma, lo, hi = law
    return np.clip(np.exp(np.log(median_s) + sigma * rng.standard_normal(n)), lo, hi) * _US


class DelayLaws:
    """``G(A)`` and ``H(x)`` from a million draws of the generator's delay laws (fixed seed)."""

    def __init__(self, window_us: float, draws: int = 1_000_000, seed: int = 0):
        rng = np.random.default_rng(seed)
        d = _delay_draws(CONVERSION_DELAY, draws, rng)
        r = _delay_draws(REPORT_DELAY, draws, rng)
        self._total = np.sort(d + r)
        self._in_window = np.sort((d + r)[d <= window_us])
        self._report = np.sort(r)
        self._draws = draws

    def observed(self, elapsed_us: np.ndarray) -> np.ndarray:
        """H: P(a conversion is reported within ``elapsed_us`` of its click)."""
        return np.searchsorted(self._total, elapsed_us, side="right") / self._draws

    def reported(self, elapsed_us: np.ndarray) -> np.ndarray:
        """P(a report comes within ``elapsed_us`` of its conversion)."""
        return np.searchsorted(self._report, elapsed_us, side="right") / self._draws

    def labelled(self, age_us: np.ndarray) -> np.ndarray:
        """G: P(a conversion falls within the window and is reported within ``age_us`` of its click)."""
        return np.searchsorted(self._in_window, age_us, side="right") / self._draws


def contract_labels(events_dir: str | Path, label_cutoff: datetime, window: timedelta = timedelta(days=7),
                    grace: timedelta = timedelta(days=1)) -> pa.Table:
    """Every click before the cutoff with the contract's ``label`` and ``matured`` (``spark_jobs/examples``):
    label 1 iff an attributed conversion with ``0 <= conversion_ts - click_ts <= window`` was reported
    by the cutoff; matured iff ``click_ts + window + grace <= cutoff``."""
    events = Path(events_dir)
    clicks = pq.read_table(events / "clicks.parquet")
    conversions = pq.read_table(events / "conversions.parquet")
    cutoff = micros(label_cutoff)
    click_ts = arrow_micros(clicks.column("click_ts"))
    keep = click_ts < cutoff
    clicks, click_ts = clicks.filter(pa.array(keep)), click_ts[keep]
    conv_ts = arrow_micros(conversions.column("conversion_ts"))
    report_ts = arrow_micros(conversions.column("report_ts"))
    attributed = conversions.column("attributed_click_id").is_valid().to_numpy(zero_copy_only=False)
    ok = attributed & (report_ts <= cutoff)
    conv_clicks = conversions.column("attributed_click_id").filter(pa.array(ok))
    index = pc.index_in(conv_clicks, value_set=clicks.column("click_id"))
    index = np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), np.int64)
    found = index >= 0
    index = index[found]
    delay = conv_ts[ok][found] - click_ts[index]
    inside = (delay >= 0) & (delay <= window.total_seconds() * _US)
    label = np.zeros(clicks.num_rows, np.int64)
    label[index[inside]] = 1
    matured = click_ts + int((window + grace).total_seconds() * _US) <= cutoff
    return clicks.append_column("label", pa.array(label)).append_column("matured", pa.array(matured))


class _History:
    """One user's events as arrays sorted by time (topics from the catalogue): per click its time, topic and
    the earliest report of an attributed conversion (inf when none); the unattributed conversions' report
    times and topics."""

    def __init__(self, click_ts, click_topic, conv_report, un_report, un_topic):
        self.click_ts, self.click_topic, self.conv_report = click_ts, click_topic, conv_report
        self.un_report, self.un_topic = un_report, un_topic


def _histories(events: Path, topic_of_adv: np.ndarray) -> dict[str, _History]:
    clicks = pq.read_table(events / "clicks.parquet").sort_by([("user_id", "ascending"),
                                                                ("click_ts", "ascending")])
    conversions = pq.read_table(events / "conversions.parquet")
    adv_number = lambda col: np.asarray(  # noqa: E731  "adv0042" -> 42
        [int(a[3:]) for a in col.to_pylist()], np.int64)
    click_ts = arrow_micros(clicks.column("click_ts"))
    click_topic = topic_of_adv[adv_number(clicks.column("advertiser_id"))]
    users = np.asarray(clicks.column("user_id").to_pylist(), dtype=object)
    # The earliest report of an attributed conversion per click (inf when none).
    first_report = np.full(clicks.num_rows, np.inf)
    report = arrow_micros(conversions.column("report_ts")).astype(float)
    att = conversions.column("attributed_click_id")
    valid = att.is_valid().to_numpy(zero_copy_only=False)
    index = pc.index_in(att.filter(pa.array(valid)), value_set=clicks.column("click_id"))
    index = np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), np.int64)
    hit = index >= 0
    np.minimum.at(first_report, index[hit], report[valid][hit])
    un = ~valid
    un_users = np.asarray(conversions.column("user_id").filter(pa.array(un)).to_pylist(), dtype=object)
    un_report = report[un]
    un_topic = topic_of_adv[adv_number(conversions.column("advertiser_id").filter(pa.array(un)))]
    out: dict[str, _History] = {}
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    un_order = np.argsort(un_users, kind="stable")
    un_users_sorted = un_users[un_order]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        user = users[a]
        sel = un_order[np.searchsorted(un_users_sorted, user, "left"):
                       np.searchsorted(un_users_sorted, user, "right")]
        out[user] = _History(click_ts[a:b], click_topic[a:b], first_report[a:b], un_report[sel],
                             un_topic[sel])
    return out


def _log1m(p: np.ndarray, h: np.ndarray) -> np.ndarray:
    """sum_i log(1 - p_m h_i) per sample m: (M,) for p (M,) and h (n,)."""
    return np.log1p(-np.clip(p[:, None] * h[None, :], 0, 1 - 1e-12)).sum(axis=1)


def bayes_probabilities(cfg: GeneratorConfig, history: _History, scale: float, snapshot_us: int,
                        topics: np.ndarray, delays: DelayLaws, samples: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray, float]:
    """``E[p_t | history before snapshot_us]`` for each of ``topics``, and the effective sample size."""
    k = cfg.topics
    seen = history.click_ts < snapshot_us
    click_topic = history.click_topic[seen]
    counts = np.bincount(click_topic, minlength=k)
    theta = rng.dirichlet(cfg.topic_alpha + counts, samples)
    if cfg.conversion_signal > 0:
        eta = rng.dirichlet(np.full(k, cfg.topic_alpha), samples)
        s = rng.standard_normal(samples)
    else:
        eta, s = np.full((samples, k), 1 / k), np.zeros(samples)
    rate = log_rates(cfg, theta, eta, s)                              # (M, K)
    p = np.minimum(scale * np.exp(rate), cfg.P_CAP)
    log_w = np.zeros(samples)
    reported = history.conv_report[seen] < snapshot_us
    for t in np.unique(click_topic):
        in_t = click_topic == t
        conv = reported & in_t
        log_w += conv.sum() * np.log(p[:, t])
        quiet = in_t & ~reported
        if quiet.any():
            log_w += _log1m(p[:, t], delays.observed(snapshot_us - history.click_ts[seen][quiet]))
    # Unattributed conversions reported so far: a Poisson count and their topics.
    span_us = cfg.days * _DAY_US
    start_us = _start_us(cfg)
    elapsed = min(max(snapshot_us - start_us, 0), span_us)
    n_total = len(click_topic) * span_us / max(elapsed, _DAY_US)
    share = cfg.unattributed_share / (1 - cfg.unattributed_share)
    q = _uniform_reported(delays, start_us, span_us, snapshot_us)
    mean = share * q * n_total * (theta * p).sum(axis=1)
    un = history.un_report < snapshot_us
    weights = theta * np.exp(rate)
    weights /= weights.sum(axis=1, keepdims=True)
    log_w += un.sum() * np.log(np.maximum(mean, 1e-300)) - mean
    for t in history.un_topic[un]:
        log_w += np.log(np.maximum(weights[:, t], 1e-300))
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    ess = float(1.0 / np.sum(w**2))
    return w @ p[:, topics], ess


def _start_us(cfg: GeneratorConfig) -> int:
    return int(datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC).timestamp()) * _US


def _uniform_reported(delays: DelayLaws, start_us: int, span_us: int, snapshot_us: int) -> float:
    """q(S): P(an unattributed conversion, uniform over the span, is reported before S)."""
    grid = start_us + (np.arange(400) + 0.5) * span_us / 400
    return float(np.mean(np.where(grid < snapshot_us, delays.reported(snapshot_us - grid), 0.0)))


def modelled(cfg: GeneratorConfig) -> bool:
    """Whether the ceiling models ``cfg``'s dynamics: not drifting click interests (the truth keeps the first
    week's) nor lost attributions (a click's label then also needs its conversion to keep its id)."""
    return cfg.interest_drift == 0 and cfg.unattributed == "independent"


def check_modelled(cfg: GeneratorConfig) -> None:
    """Refuse a generator setting the ceiling does not model (``modelled``)."""
    if not modelled(cfg):
        raise DuetError("the ceiling models the generator's default dynamics only: static click interests "
                        "and independent unattributed conversions (this data has interest_drift "
                        f"{cfg.interest_drift:g}, unattributed {cfg.unattributed!r})")


def click_probabilities(events_dir: str | Path, truth_dir: str | Path, rows: pa.Table,
                        label_cutoff: datetime, window: timedelta = timedelta(days=7),
                        samples: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Oracle and Bayes label probabilities for ``rows`` (``user_id``, ``advertiser_id``, ``click_ts``).

    Returns ``{"oracle": (n,), "bayes": (n,), "ess": (n,)}``."""
    cfg, users, topic_of_adv = read_truth(truth_dir)
    check_modelled(cfg)
    delays = DelayLaws(window.total_seconds() * _US)
    cutoff = micros(label_cutoff)
    user_index = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    theta = np.stack(users.column("theta").to_numpy(zero_copy_only=False))
    eta = np.stack(users.column("eta").to_numpy(zero_copy_only=False))
    s = users.column("propensity").to_numpy()
    scale = users.column("scale").to_numpy()
    row_users = rows.column("user_id").to_pylist()
    u = np.asarray([user_index[x] for x in row_users], np.int64)
    topic = topic_of_adv[np.asarray([int(a[3:]) for a in rows.column("advertiser_id").to_pylist()])]
    click_ts = arrow_micros(rows.column("click_ts"))
    g = delays.labelled(cutoff - click_ts)
    p_true = np.minimum(scale[u] * np.exp(log_rates(cfg, theta[u], eta[u], s[u])[np.arange(len(u)), topic]),
                        cfg.P_CAP)
    oracle = p_true * g
    histories = _histories(Path(events_dir), topic_of_adv)
    start = _start_us(cfg)
    snapshot = start + (click_ts - start) // _DAY_US * _DAY_US
    bayes, ess = np.zeros(len(u)), np.zeros(len(u))
    rng = np.random.default_rng(seed)
    keys = np.rec.fromarrays([u, snapshot])
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.r_[True, (np.diff(u[order]) != 0) | (np.diff(snapshot[order]) != 0), True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        sel = order[a:b]
        user = row_users[sel[0]]
        history = histories.get(user) or _History(*(np.zeros(0, np.int64),) * 5)
        mean, e = bayes_probabilities(cfg, history, float(scale[u[sel[0]]]), int(snapshot[sel[0]]),
                                      topic[sel], delays, samples, rng)
        bayes[sel], ess[sel] = mean, e
    return {"oracle": oracle, "bayes": bayes * g, "ess": ess}


def ceiling(events_dir: str | Path, truth_dir: str | Path, rows: pa.Table, label_cutoff: datetime,
            window: timedelta = timedelta(days=7), samples: int = 4000, seed: int = 0) -> CeilingReport:
    """The oracle and Bayes NE (and AUC) on ``rows``, whose ``label`` column is the contract's label."""
    probs = click_probabilities(events_dir, truth_dir, rows, label_cutoff, window, samples, seed)
    y = rows.column("label").to_numpy().astype(float)
    cfg, _, _ = read_truth(truth_dir)
    oracle, bayes = metrics.summary(probs["oracle"], y), metrics.summary(probs["bayes"], y)
    return CeilingReport(rows=len(y), positives=int(y.sum()), oracle_ne=oracle["ne"], bayes_ne=bayes["ne"],
                         oracle_auc=oracle["auc"], bayes_auc=bayes["auc"],
                         samples=samples, median_ess=float(np.median(probs["ess"])),
                         conversion_signal=cfg.conversion_signal)
