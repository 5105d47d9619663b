"""The ranker's time periods. Standard library and ``core`` only, so the conductor can plan without loading
Spark.

Half-open and in this order, no overlap:
``pretrain_until <= train_from < valid_from < test_from < test_until <= label_cutoff - window - grace``:
the encoders learned only from snapshots up to ``pretrain_until`` (their pre-training targets included),
the ranker trains on clicks in ``[train_from, valid_from)``, stops early on ``[valid_from, test_from)``
and is measured on ``[test_from, test_until)``, all of whose labels are mature at the cutoff.
``Splits.check`` refuses an order that would leak, so a caller cannot build a leaking set by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.contracts import ATTRIBUTION_WINDOW, REPORT_GRACE
from core.errors import DuetError

SPLIT_NAMES = ("train", "valid", "test")
PERIOD_SHARES = (0.42, 0.74, 0.84)   # cumulative ends of pre-training, ranker training, validation
# The key under which ``ranker.training_set.build_training_set`` records the splits (and the model versions)
# in its commit's userMetadata; ``ranker.data.training_set_record`` reads it.
RECORD_KEY = "duet.training_set"


@dataclass(frozen=True)
class Splits:
    """The ranker's periods (aware instants); see the module docstring for the order they must keep."""

    pretrain_until: datetime
    train_from: datetime
    valid_from: datetime
    test_from: datetime
    test_until: datetime

    def check(self, label_cutoff: datetime | None = None, settle: timedelta | None = None) -> None:
        order = [self.pretrain_until, self.train_from, self.valid_from, self.test_from, self.test_until]
        if any(t.tzinfo is None for t in order):
            raise DuetError("split boundaries must be zone-aware instants")
        if not (order[0] <= order[1] < order[2] < order[3] < order[4]):
            raise DuetError("splits must satisfy pretrain_until <= train_from < valid_from < test_from < "
                            f"test_until; got {', '.join(t.isoformat() for t in order)}")
        if label_cutoff is not None and settle is not None and self.test_until + settle > label_cutoff:
            raise DuetError(f"the test period ends at {self.test_until.isoformat()}, but labels are mature "
                            "only "
                            f"for clicks before {(label_cutoff - settle).isoformat()}")

    def to_dict(self) -> dict:
        return {"pretrain_until": self.pretrain_until.isoformat(),
                "train": [self.train_from.isoformat(), self.valid_from.isoformat()],
                "valid": [self.valid_from.isoformat(), self.test_from.isoformat()],
                "test": [self.test_from.isoformat(), self.test_until.isoformat()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Splits:
        """What ``to_dict`` wrote (a training set's record, a stage's recorded result)."""
        try:
            pretrain_until = datetime.fromisoformat(data["pretrain_until"])
            (train_from, valid_from), (valid_again, test_from), (test_again, test_until) = (
                [datetime.fromisoformat(t) for t in data[name]] for name in SPLIT_NAMES)
        except (KeyError, TypeError, ValueError) as e:
            raise DuetError(f"splits: expected pretrain_until and [from, until] ISO-8601 times for "
                            f"{', '.join(SPLIT_NAMES)}, got {dict(data)!r}") from e
        if valid_again != valid_from or test_again != test_from:
            raise DuetError(f"splits: each period must start where the one before ends, got {dict(data)!r}")
        return cls(pretrain_until, train_from, valid_from, test_from, test_until)


@dataclass(frozen=True)
class Periods:
    """The demo's time plan: ``label_cutoff`` and the ranker's ``splits`` (``splits.pretrain_until`` is
    where the encoders stop)."""

    label_cutoff: datetime
    splits: Splits

    def to_dict(self) -> dict:
        return {"label_cutoff": self.label_cutoff.isoformat(), **self.splits.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Periods:
        """What ``to_dict`` wrote."""
        if "label_cutoff" not in data:
            raise DuetError(f"periods: no label_cutoff in {dict(data)!r}")
        splits = {k: v for k, v in data.items() if k != "label_cutoff"}
        return cls(datetime.fromisoformat(data["label_cutoff"]), Splits.from_dict(splits))


def demo_periods(snapshots: list[datetime], attribution_window: timedelta = ATTRIBUTION_WINDOW,
                 report_grace: timedelta = REPORT_GRACE) -> Periods:
    """Cut the snapshots' range into pre-training, ranker training, validation and test (whole days,
    ``PERIOD_SHARES``), all before the clicks stop being mature at the last snapshot."""
    cutoff = snapshots[-1]
    mature_until = cutoff - attribution_window - report_grace
    span = (mature_until - snapshots[0]).days
    if span < 8:
        first, last = snapshots[0].date(), (cutoff - timedelta(days=1)).date()
        raise DuetError(
            f"the data covers {first} to {last}, too short for the ranker: labels mature "
            f"{(attribution_window + report_grace).days} days after a click, which leaves {max(span, 0)} "
            "day(s) of mature clicks after the first snapshot; at least 8 are needed for pre-training, "
            "training, validation and test periods. Give events over a longer time range.")
    ends = [snapshots[0] + timedelta(days=round(share * span)) for share in PERIOD_SHARES]
    splits = Splits(ends[0], ends[0], ends[1], ends[2], snapshots[0] + timedelta(days=span))
    splits.check(cutoff, attribution_window + report_grace)
    return Periods(cutoff, splits)
