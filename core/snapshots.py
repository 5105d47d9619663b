"""Snapshots: the instants features are computed for, as the command line and every stage read them.

A snapshot ``T`` is an aware UTC instant (by default 00:00 UTC of a day); a row for ``T`` may use only
what the platform knew strictly before ``T`` (../shared/CONTRACTS.md). This module turns what a user
types into snapshots; it imports nothing but the standard library.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from core.errors import DuetError


def parse_snapshot(text: str) -> datetime:
    """An ISO date (00:00 UTC of that day) or instant (zone-less = UTC) -> aware UTC datetime."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise DuetError(f"cannot read snapshot {text!r}: use YYYY-MM-DD or an ISO-8601 instant") from e
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def daily_snapshots(first: str, last: str) -> list[datetime]:
    """00:00 UTC of every day from ``first`` to ``last`` inclusive."""
    start, end = parse_snapshot(first), parse_snapshot(last)
    if end < start:
        raise DuetError(f"the last day {last} is before the first {first}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def check_snapshots(snapshots: list[datetime]) -> list[datetime]:
    """The snapshots as UTC instants, sorted, each once (checked before Spark starts). None at all is an
    error, and so is a naive datetime: PySpark would read it in this machine's local time."""
    if not snapshots:
        raise DuetError("no snapshot given")
    naive = [s for s in snapshots if s.tzinfo is None or s.utcoffset() is None]
    if naive:
        raise DuetError(f"snapshot {naive[0].isoformat()} has no time zone: give an aware instant "
                        "(e.g. tzinfo=UTC), never a local time")
    return sorted({s.astimezone(UTC) for s in snapshots})
