"""The ``duet`` command line: the conductor that knows every stage.

Each sub-command parses its arguments, builds at most one SparkSession (``duet.spark``) and calls a stage.
Failures a user can fix (``DuetError``) print ``duet: error: <one line>`` and exit 1; anything else is a
bug and prints its first line plus a hint to re-run with ``--verbose`` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from datetime import date

from duet.errors import DuetError, ValidationFailed


def _spark_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Spark")
    g.add_argument("--master", help="Spark master URL (default: local[*], or what spark-submit set)")
    g.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="Spark setting, repeatable (e.g. --conf spark.sql.shuffle.partitions=64)")


def _spark(args: argparse.Namespace, app: str):
    from duet.spark import parse_conf, spark_session

    return spark_session(master=args.master, conf=parse_conf(args.conf), app_name=f"duet-{app}",
                         verbose=args.verbose)


def _cmd_generate(args: argparse.Namespace) -> int:
    from duet.generate import GeneratorConfig, generate

    cfg = GeneratorConfig(users=args.users, days=args.days, start=args.start, seed=args.seed,
                          conversion_signal=args.conversion_signal,
                          unattributed_share=args.unattributed_share)
    print(generate(cfg, args.out).to_json())
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from spark_jobs.ingest import check_args, run

    check_args(args)  # fail on a bad path before paying for a Spark start
    run(_spark(args, "ingest"), args)
    return 0


def _cmd_sequences(args: argparse.Namespace) -> int:
    from spark_jobs.sequences import config_from_args, run, snapshots_from_args

    snapshots_from_args(args), config_from_args(args)  # fail on bad arguments before Spark starts
    run(_spark(args, "sequences"), args)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from duet.quality.runner import validate_lake

    report = validate_lake(_spark(args, "validate"), args.lake)
    print(report.summary())
    if not report.tables:
        raise ValidationFailed(f"no duet tables under {args.lake}: is it the lake root?")
    if not report.success:
        failed = [f"{t.table}: {d}" for t in report.tables for d in t.failed]
        raise ValidationFailed(f"{len(failed)} expectation(s) failed: " + " | ".join(failed))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from duet.pipeline import DemoConfig, run_demo

    cfg = DemoConfig(workdir=args.workdir, seed=args.seed, clicks=args.clicks, conversions=args.conversions,
                     users=args.users, days=args.days)
    print(json.dumps(run_demo(_spark(args, "demo"), cfg), indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duet", description="DUET user embeddings: events -> Delta -> "
                                     "encoders -> Feast -> ranker. See README.md.")
    parser.add_argument("--verbose", action="store_true", help="Spark's own logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write synthetic click and conversion files")
    p.add_argument("--out", required=True, help="folder for clicks.parquet and conversions.parquet")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 5), help="first day, YYYY-MM-DD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conversion-signal", type=float, default=1.0,
                   help="how much past conversions tell about future ones beyond clicks (0 = nothing)")
    p.add_argument("--unattributed-share", type=float, default=0.3,
                   help="share of conversions with no attributed click (default 0.3)")
    p.set_defaults(handler=_cmd_generate)

    from spark_jobs.ingest import add_arguments as ingest_arguments

    p = sub.add_parser("ingest", help="ingest event files into raw/* Delta tables (rejects to quarantine/*)")
    ingest_arguments(p)
    _spark_options(p)
    p.set_defaults(handler=_cmd_ingest)

    from spark_jobs.sequences import add_arguments as sequence_arguments

    p = sub.add_parser("sequences", help="build per-user click and conversion sequences per snapshot")
    sequence_arguments(p)
    _spark_options(p)
    p.set_defaults(handler=_cmd_sequences)

    p = sub.add_parser("validate", help="run the Great Expectations suites on the lake's tables")
    p.add_argument("--lake", required=True)
    _spark_options(p)
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded default")
    p.add_argument("--workdir", required=True, help="writes lake/ and report/ under it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clicks", help="use this clicks file instead of generating events")
    p.add_argument("--conversions", help="use this conversions file instead of generating events")
    p.add_argument("--users", type=int, default=2000, help="synthetic users when generating")
    p.add_argument("--days", type=int, default=14, help="synthetic days when generating")
    _spark_options(p)
    p.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DuetError as e:
        print(f"duet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("duet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a Java stack
        if args.verbose:
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"duet: error: {type(e).__name__}: {first} (re-run with --verbose for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
