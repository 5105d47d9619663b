"""What the conductor prints about the stages' results: lines for people, built from typed results."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ranker.evaluate import AblationResult


def training_set_lines(built) -> list[str]:
    """One line per model version of ``training/training_set`` (``ranker.training_set.TrainingSetReport``)."""
    from core.contracts import TRAINING_SET

    return [f"{TRAINING_SET.path} {key}: {figures.rows:,} rows, {figures.positives:,} positive, "
            f"{figures.without_embedding:,} without an embedding" for key, figures in built.rows.items()]


def delayed_feedback_lines(result) -> list[str]:
    """The pool and each mode's reduction against ``matured`` (``ranker.delayed.DelayedFeedbackResult``)."""
    pool = result.pool
    lines = [f"delayed feedback at {result.trained_at:%Y-%m-%d}: {pool.clicks:,} clicks, {pool.matured:,} "
             f"matured, {pool.immature:,} immature ({pool.immature_seen_positives:,} positive so far)"]
    for name, r in result.relative_ne_reduction.items():
        lines.append(f"delayed feedback {name}: relative NE reduction {100 * r.mean:+.2f}% "
                     f"(95% interval {100 * r.interval[0]:+.2f}% to {100 * r.interval[1]:+.2f}%)")
    return lines


def ne_table(ablation: AblationResult) -> str:
    """Every variant's NE with its interval, AUC and calibration, then duet's reduction against each
    baseline."""
    width = max([11, *(len(name) for name in ablation.variants)])
    lines = [f"{'variant':<{width}} {'NE':>7}  {'95% interval':<17} {'AUC':>6} {'calib.':>6}"]
    for name, v in ablation.variants.items():
        lo, hi = v.ne_interval
        lines.append(f"{name:<{width}} {v.ne:7.4f}  [{lo:.4f}, {hi:.4f}] {v.auc:6.4f} {v.calibration:6.3f}")
    for r in (ablation.reductions or {}).values():
        lines.append(f"{r.variant} vs {r.baseline}: relative NE reduction {100 * r.mean:+.2f}% "
                     f"(95% interval {100 * r.interval[0]:+.2f}% to {100 * r.interval[1]:+.2f}%)")
    return "\n".join(lines)
