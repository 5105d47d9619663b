"""The ``duet`` command line: the conductor that knows every stage.

Every sub-command's arguments are defined here, and only here: each handler turns them into the stage's
typed config, checks what can be checked before Spark starts, builds at most one SparkSession
(``core.spark``) and calls the stage. Building the parser imports no stage and no Spark, so ``duet --help``
and ``duet generate`` stay fast; stages are imported inside the handlers. A flag that sets a config field is
bound to it (``duet.flags``): the config holds its default, which ``--help`` shows. Failures a user can fix
(``DuetError``) print ``duet: error: <one line>``, with the flags that set the inputs at fault, and exit 1;
anything else is a bug and prints its first line plus a hint to re-run with ``--verbose`` for the traceback.
Under spark-submit the same ``main`` runs through ``duet.submit_entry``.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from datetime import date, timedelta

from core.contracts import RAW_CLICKS, TRAINING_EXAMPLES, TRAINING_SET, USER_EMBEDDINGS
from core.errors import DuetError, ValidationFailed
from core.lake import FEAST, MODELS, RANKERS
from core.variants import variant_names
from duet.flags import add_field, configure, flags_for, values

# What flags are bound to (duet.flags): each default lives in these configs (and in ``serve``'s signature, a
# stage entry point without a config), named as text so that building the parser imports no stage.
GENERATOR, GENERATOR_SETTINGS = "duet.generate:GeneratorConfig", "duet.generate:SETTINGS"
INGEST = "spark_jobs.ingest:IngestConfig"
SEQUENCES = "spark_jobs.sequences:SequenceConfig"
PRETRAIN = "encoders.config:PretrainConfig"
EMBED = "encoders.config:EmbedConfig"
EXAMPLES = "spark_jobs.examples:ExamplesConfig"
ABLATION = "ranker.evaluate:AblationConfig"
SERVER = "serving.server:serve"
CONSISTENCY = "serving.consistency:ConsistencyConfig"


def _spark_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Spark")
    g.add_argument("--master", help="Spark master URL (default: local[*], or what spark-submit set)")
    g.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="Spark setting, repeatable (e.g. --conf spark.sql.shuffle.partitions=64)")


def _snapshot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", action="append", default=[], metavar="TS",
                   help="snapshot instant or date (00:00 UTC), repeatable")
    p.add_argument("--from", dest="date_from", metavar="D", help="first daily snapshot (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="D", help="last daily snapshot (inclusive)")


def _spark(args: argparse.Namespace, app: str):
    from core.spark import parse_conf, spark_session

    return spark_session(master=args.master, conf=parse_conf(args.conf), app_name=f"duet-{app}",
                         verbose=args.verbose)


def _cmd_generate(args: argparse.Namespace) -> int:
    from duet.generate import generate, setting

    cfg = configure(args, setting(args.setting))
    summary = generate(cfg, args.out, args.truth)
    if args.landing:
        from duet.generate import write_landing

        days = write_landing(summary.clicks_path, summary.conversions_path, args.landing)
        print(f"landed {len(days)} day(s) under {args.landing}: {days[0]} .. {days[-1]}", file=sys.stderr)
    print(summary.to_json())
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from spark_jobs.ingest import IngestConfig, check_inputs, ingest
    from spark_jobs.readers import check_exists
    from spark_jobs.taobao import ingest_taobao

    taobao = args.format == "taobao" or args.events
    if taobao and (args.format != "taobao" or not args.events or args.clicks or args.conversions):
        raise DuetError("the Taobao layout takes exactly: --format taobao --events FILE")
    # A missing or empty file fails before paying for a Spark start.
    if taobao:
        check_exists(args.events)
    else:
        check_inputs(args.clicks, args.conversions, args.format)
    cfg = configure(args, IngestConfig(lake=args.lake, reingest=args.reingest))
    spark = _spark(args, "ingest")
    if taobao:
        results = [ingest_taobao(spark, cfg, args.events)]
    else:
        results = ingest(spark, cfg, args.clicks, args.conversions, args.format)
    for r in results:
        print(r.line())
    return 0


def _cmd_sequences(args: argparse.Namespace) -> int:
    from spark_jobs.sequences import SequenceConfig, build_sequences, report_lines

    # Every argument is checked before Spark starts.
    snapshots = _snapshots(args)
    cfg = configure(args, SequenceConfig())
    report = build_sequences(_spark(args, "sequences"), args.lake, snapshots, cfg)
    print("\n".join(report_lines(report)))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from duet.validation import validate

    snapshots = _snapshots(args) if args.snapshot or args.date_from or args.date_to else None
    if snapshots is not None and args.all:
        raise DuetError("--all checks every snapshot: give it or --snapshot/--from/--to, not both")
    report = validate(_spark(args, "validate"), args.lake, tables=args.table or None, snapshots=snapshots,
                      new_only=not args.all)
    print(report.summary())
    if not report.tables and not report.unchanged:
        raise ValidationFailed(f"no duet tables under {args.lake}: is it the lake root?")
    if not report.success:
        failed = [f"{t.table}: {d}" for t in report.tables for d in t.failed]
        raise ValidationFailed(f"{len(failed)} expectation(s) failed: " + " | ".join(failed))
    return 0


def _passed(instant, what: str, why: str):
    """``instant`` if it is not later than now; a result computed for a later instant would be read as
    final while the events before it are still arriving."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    if instant > now:
        raise DuetError(f"{what} {instant.isoformat()} is in the future "
                        f"(now {now.isoformat(timespec='seconds')}): {why}")
    return instant


def _snapshots(args: argparse.Namespace) -> list:
    """The snapshots of ``--snapshot`` (repeatable) and ``--from/--to`` (daily), sorted, each once; none
    later than now (a snapshot holds what was known before it: it can be built once it has passed)."""
    from core.snapshots import check_snapshots, daily_snapshots, parse_snapshot

    if bool(args.date_from) != bool(args.date_to):
        raise DuetError("--from and --to go together")
    if not args.snapshot and not args.date_from:
        raise DuetError("no snapshot given: use --snapshot TS (repeatable) or --from D --to D")
    snapshots = [parse_snapshot(s) for s in args.snapshot]
    if args.date_from:
        snapshots += daily_snapshots(args.date_from, args.date_to)
    snapshots = check_snapshots(snapshots)
    _passed(snapshots[-1], "snapshot", "a snapshot holds what was known before it, so it can be built "
                                       "only once it has passed")
    return snapshots


def _pretrain_config(args: argparse.Namespace):
    """``--config FILE`` (a JSON PretrainConfig, unknown keys refused) with the given flags laid over it."""
    from pathlib import Path

    from core.records import from_dict
    from encoders.config import PretrainConfig

    cfg = PretrainConfig()
    if args.config:
        try:
            cfg = from_dict(PretrainConfig, json.loads(Path(args.config).read_text()))
        except (OSError, ValueError) as e:
            raise DuetError(f"cannot read --config {args.config}: {e}") from e
    return configure(args, cfg)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from core.snapshots import parse_snapshot

    cfg = _pretrain_config(args)     # a bad --config or snapshot fails before torch is imported
    until = parse_snapshot(args.train_until) if args.train_until else None
    from encoders.pretrain import pretrain

    report = pretrain(args.lake, cfg, until)
    print(report.model_version)
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from encoders.config import EmbedConfig
    from encoders.model_store import require_weights

    snapshots = _snapshots(args)
    if args.model_version:
        require_weights(args.lake, args.model_version)   # an imported embedding has no model to run
    cfg = configure(args, EmbedConfig())
    if args.engine == "spark":
        from encoders.spark_embed import embed_snapshots_spark

        embed_snapshots_spark(_spark(args, "embed"), args.lake, snapshots, args.model_version, cfg,
                              args.changed_only)
    else:
        from encoders.embed import embed_snapshots

        embed_snapshots(args.lake, snapshots, args.model_version, cfg, args.changed_only)
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from core.snapshots import parse_snapshot
    from serving.publish import PublishConfig, publish, resolve_version
    from serving.store import StoreConfig

    store = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    snapshot = parse_snapshot(args.snapshot) if args.snapshot else None
    resolve_version(args.lake, args.model_version)  # a missing model fails before Spark starts
    publish(_spark(args, "publish"), PublishConfig(store=store, snapshot=snapshot,
                                                    model_version=args.model_version,
                                                    revalidate=args.revalidate, promote=args.promote,
                                                    allow_drift=args.allow_drift))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from serving.publish import resolve_version
    from serving.store import StoreConfig

    store = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    resolve_version(args.lake, args.model_version)   # an unknown model fails before Spark starts
    from serving.versions import promote

    _spark(args, "promote")       # the contract views' refresh materializes through Feast's Spark store
    print(json.dumps(promote(store, args.model_version, allow_drift=args.allow_drift).to_dict()))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from serving.store import StoreConfig
    from serving.versions import record, rollback

    store = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    if not record(args.lake).get("previous"):
        rollback(store)            # says why, before Spark starts
    _spark(args, "rollback")
    print(json.dumps(rollback(store).to_dict()))
    return 0


def _cmd_retire(args: argparse.Namespace) -> int:
    from serving.store import StoreConfig
    from serving.versions import retire

    retire(StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis),
           args.model_version)
    return 0


def _cmd_consistency(args: argparse.Namespace) -> int:
    """Exit 0: every reader path gave the lake's rows; 1: a mismatch, a missing or an extra row, or a
    reader that failed (the lines say which), or an error (``duet: error: ...``)."""
    from core.snapshots import parse_snapshot
    from serving.consistency import ConsistencyConfig, check_consistency
    from serving.store import StoreConfig

    store = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    snapshot = parse_snapshot(args.snapshot) if args.snapshot else None
    cfg = configure(args, ConsistencyConfig(store=store, model_version=args.model_version, snapshot=snapshot,
                                            server_url=args.server))
    report = check_consistency(cfg, log=lambda line: print(line, flush=True))
    print(json.dumps(report.to_dict()), flush=True)
    return 0 if report.ok else 1


def _cmd_examples(args: argparse.Namespace) -> int:
    from core.snapshots import parse_snapshot
    from spark_jobs.examples import ExamplesConfig, build_examples

    cutoff = _passed(parse_snapshot(args.label_cutoff), "label cutoff",
                     "labels count the conversions reported by the cutoff, so a later one would call "
                     "clicks final that may still convert")
    cfg = configure(args, ExamplesConfig(lake=args.lake, label_cutoff=cutoff))
    print(json.dumps(build_examples(_spark(args, "examples"), cfg)))
    return 0


def _cmd_embeddings_import(args: argparse.Namespace) -> int:
    from encoders.model_store import check_external_name

    check_external_name(args.model_version)   # a bad name fails before anything is read
    from duet.byo import import_embeddings

    landed = import_embeddings(args.lake, args.model_version, args.path, lambda: _spark(args, "import"))
    print(json.dumps(landed.to_dict()))
    return 0


def _splits(values: list[str] | None):
    if not values:
        return None
    from core.snapshots import parse_snapshot
    from ranker.splits import Splits

    return Splits(*(parse_snapshot(v) for v in values))


def _cmd_training_set(args: argparse.Namespace) -> int:
    from ranker.config import check_variants

    if args.model_version:
        check_variants(args.model_version)
        bad = [v for v in args.model_version if v == "none" or "-" not in v]
        if bad:
            raise DuetError(f"--model-version takes model versions (e.g. duet-3f2a9c1, ext-NAME), "
                            f"not {bad[0]}")
    splits = _splits(args.splits)       # a bad instant fails before Spark starts
    if splits is not None:
        splits.check()
    from duet.byo import build_lake_training_set, examples_cutoff, lake_periods
    from ranker.training_set import build_training_set
    from spark_jobs.examples import ExamplesConfig

    available_at = values(args, build_training_set)["available_at"]
    spark = _spark(args, "training-set")
    labels = configure(args, ExamplesConfig(lake=args.lake, label_cutoff=examples_cutoff(spark, args.lake)))
    periods = lake_periods(spark, args.lake, labels.label_cutoff, labels.attribution_window,
                           labels.report_grace, splits)
    build_lake_training_set(spark, args.lake, args.model_version, periods, available_at)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ranker.config import check_variants

    check_variants(args.variants)
    from duet.byo import evaluate_variants
    from ranker.evaluate import AblationConfig

    evaluate_variants(args.lake, args.variants, args.out, values(args, AblationConfig)["seeds"], args.seed)
    return 0


def _parse_ads(text: str) -> list[tuple[str, str | None]]:
    ads = [a.strip() for a in text.split(",") if a.strip()]
    if not ads:
        raise DuetError("--ads needs at least one ad id (AD or AD@ADVERTISER, comma separated)")
    return [tuple(a.split("@", 1)) if "@" in a else (a, None) for a in ads]


def _cmd_score(args: argparse.Namespace) -> int:
    from core.snapshots import parse_snapshot
    from ranker.score import resolve_candidates, score
    from serving.publish import resolve_version
    from serving.store import StoreConfig, feature_store
    from serving.versions import record

    deployment = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    version = resolve_version(args.lake, args.model_version or record(args.lake).get("model_version"))
    candidates = resolve_candidates(args.lake, _parse_ads(args.ads))
    store = feature_store(deployment)
    as_of = parse_snapshot(args.as_of) if args.as_of else None
    ranked, read = score(store, args.lake, version, args.user, candidates, as_of)
    print(json.dumps({**read, "ranked": [vars(s) for s in ranked]}, indent=1))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.store import StoreConfig

    store = StoreConfig(lake=args.lake, yaml_path=args.feature_store_yaml, redis=args.redis)
    from serving.server import serve

    serve(store, **values(args, serve), log=lambda line: print(line, flush=True))
    return 0


def _report_grace(value: str) -> timedelta | None:
    """``--report-grace-days``: a number of days, or ``measured`` (None: the lake's own report delays)."""
    if value == "measured":
        return None
    try:
        days = float(value)
    except ValueError:
        raise DuetError(f"--report-grace-days {value!r}: give a number of days or measured") from None
    if not days >= 0:
        raise DuetError(f"--report-grace-days {value}: must not be negative")
    return timedelta(days=days)


def _daily(args: argparse.Namespace, command: str, days) -> int:
    from duet.daily import DailyConfig, plan, run_daily, summary

    cfg = configure(args, DailyConfig(lake=args.lake, days=days, landing=args.landing,
                                      model_version=args.model_version,
                                      feature_store_yaml=args.feature_store_yaml, redis=args.redis,
                                      force=args.force))
    if args.dry_run:
        for step in plan(cfg):
            print(f"{step.step} {step.day}: {'runs (' + step.why + ')' if step.ran else step.why}")
        return 0
    record = run_daily(lambda: _spark(args, command), cfg, command)
    print(summary(record), file=sys.stderr if record.exit else sys.stdout)
    print(record.to_json(), flush=True)    # the last line: the run record a scheduler reads
    return record.exit


def _cmd_daily(args: argparse.Namespace) -> int:
    from core.lake import Lake
    from duet.daily import plan_days

    day = _passed(_day(args.date), "--date", "its snapshot would be read as final while events before it "
                  "are still arriving").date()
    first = _day(args.first_date).date() if args.first_date else None
    return _daily(args, "daily", plan_days(Lake(args.lake), day, first))


def _cmd_backfill(args: argparse.Namespace) -> int:
    from duet.daily import backfill_days

    why = "its snapshot would be read as final while events before it are still arriving"
    last = _passed(_day(args.date_to), "--to", why).date()
    return _daily(args, "backfill", backfill_days(_day(args.date_from).date(), last))


def _cmd_status(args: argparse.Namespace) -> int:
    from duet.status import lake_status, today

    status = lake_status(args.lake, args.landing, today())
    print("\n".join(status.lines()))
    print(status.to_json())
    return 0


def _day(text: str):
    from core.snapshots import parse_snapshot

    instant = parse_snapshot(text)
    if instant.timetz().replace(tzinfo=None) != instant.min.time():
        raise DuetError(f"{text}: give a date (YYYY-MM-DD), the snapshot at its 00:00 UTC")
    return instant


def _cmd_maintain(args: argparse.Namespace) -> int:
    from duet.maintain import plan_maintenance, run_maintenance

    plans = plan_maintenance(args.lake, args.retention_hours, args.table)   # refusals before Spark starts
    report = run_maintenance(_spark(args, "maintain"), args.lake, plans, dry_run=args.dry_run)
    print(report.to_json(), flush=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from duet.demo import DemoConfig, InputFiles, RankerStageConfig, run_demo

    cfg = configure(args, DemoConfig(
        workdir=args.workdir, force=args.force,
        input=InputFiles(clicks=args.clicks, conversions=args.conversions, taobao=args.taobao),
        ranker=RankerStageConfig(delayed_feedback=args.delayed_feedback)))
    print(json.dumps(run_demo(lambda: _spark(args, "demo"), cfg), indent=1))
    return 0


def _sequence_flags(p: argparse.ArgumentParser, owner: str, prefix: str = "") -> None:
    """The sequence windows and caps, bound to ``owner``'s SequenceConfig fields (under ``prefix``)."""
    add_field(p, "--click-lookback-days", owner, f"{prefix}click_lookback", type=float,
              help="clicks this long before a snapshot are kept")
    add_field(p, "--conversion-lookback-days", owner, f"{prefix}conversion_lookback", type=float,
              help="conversions that happened this long before a snapshot are kept")
    add_field(p, "--max-clicks", owner, f"{prefix}max_clicks", type=int,
              help="most recent clicks kept per user")
    add_field(p, "--max-conversions", owner, f"{prefix}max_conversions", type=int,
              help="most recent conversions kept per user")


def _store_options(p: argparse.ArgumentParser, verb: str) -> None:
    """The online store's deployment: ``--feature-store-yaml`` and ``--redis`` (publish, serve, score)."""
    p.add_argument("--feature-store-yaml", metavar="FILE",
                   help="Feast configuration (default: feature_repo/feature_store.yaml; "
                        "${DUET_LAKE} in it is --lake)")
    p.add_argument("--redis", metavar="HOST:PORT",
                   help=f"{verb} this Redis instead of the configuration's online store (a password: "
                        "$DUET_REDIS_PASSWORD_FILE or $DUET_REDIS_PASSWORD, never here)")


def _allow_drift_option(p: argparse.ArgumentParser, verb: str) -> None:
    """``--allow-drift``: publish or promote even when a stability gate fails (serving.drift)."""
    p.add_argument("--allow-drift", action="store_true",
                   help=f"{verb} even when the stability gate (drift against the previous snapshot, or "
                        "against the served version) fails; the failed figures are recorded with the "
                        "version's publish record")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duet", description="DUET user embeddings: events -> Delta -> "
                                     "encoders -> Feast -> ranker. See README.md.")
    parser.add_argument("--verbose", action="store_true", help="Spark's own logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write synthetic click and conversion files")
    p.add_argument("--out", required=True, help="folder for clicks.parquet and conversions.parquet")
    p.add_argument("--truth", metavar="DIR", help="also write each user's latents and each advertiser's "
                   "topic here, a folder apart from --out (duet.ceiling reads it)")
    p.add_argument("--landing", metavar="DIR",
                   help="also split the files into DIR/YYYY-MM-DD/ day folders of reports with a _SUCCESS "
                        "file each, the landing layout `duet daily --landing` reads")
    p.add_argument("--setting", default="default",
                   help="named generator setting, default or duet-targeted (duet.generate.SETTINGS): its "
                        "values replace the defaults below, and the flags given replace its values")

    def knob(flag: str, name: str, **kwargs) -> None:
        """A GeneratorConfig field; --help shows its default and each named setting's value."""
        add_field(p, flag, GENERATOR, name, presets=GENERATOR_SETTINGS, **kwargs)

    knob("--users", "users", type=int, help="synthetic users")
    knob("--days", "days", type=int, help="days of events")
    knob("--start", "start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    knob("--seed", "seed", type=int, help="the same seed and settings give the same files")
    knob("--conversion-signal", "conversion_signal", type=float,
         help="how much past conversions tell about future ones beyond clicks (0 = nothing)")
    knob("--unattributed-share", "unattributed_share", type=float,
         help="share of conversions with no attributed click")
    knob("--unattributed", "unattributed", choices=["independent", "lost"],
         help="unattributed conversions drawn apart from clicks, or lost attributions of converted clicks")
    knob("--interest-drift", "interest_drift", type=float,
         help="weekly share of click interests replaced by a fresh draw")
    knob("--clicks-per-day", "clicks_per_day", type=float, help="mean clicks per user-day")
    knob("--cvr", "cvr", type=float, help="share of clicks that convert")
    p.set_defaults(handler=_cmd_generate)

    p = sub.add_parser("ingest", help="ingest event files into raw/* Delta tables (rejects to quarantine/*)")
    p.add_argument("--lake", required=True, help="lake root folder or URI (tables go under it)")
    p.add_argument("--clicks", help="clicks file in the raw layout (CSV with header, Parquet, JSONL)")
    p.add_argument("--conversions", help="conversions file in the raw layout")
    p.add_argument("--events", help="Taobao UserBehavior CSV (with --format taobao)")
    p.add_argument("--format", choices=["csv", "parquet", "jsonl", "taobao"],
                   help="input format (default: from the file extension)")
    add_field(p, "--attribution-window-days", INGEST, "attribution_window_s", type=float,
              help="Taobao layout: a buy is attributed to the same user's latest pv of the item at most "
                   "this long before it")
    p.add_argument("--reingest", action="store_true",
                   help="read every file, even one the ingest log holds with the same bytes and settings "
                        "(which is otherwise skipped, its account taken from the log)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("sequences", help="build per-user click and conversion sequences per snapshot")
    p.add_argument("--lake", required=True, help="lake root (reads raw/*, writes features/*)")
    _snapshot_options(p)
    _sequence_flags(p, SEQUENCES)
    _spark_options(p)
    p.set_defaults(handler=_cmd_sequences)

    p = sub.add_parser("pretrain", help="pre-train a user encoder (duet) or a baseline on the sequences")
    p.add_argument("--lake", required=True, help=f"lake root (reads features/*, writes {MODELS}/<version>/)")
    add_field(p, "--variant", PRETRAIN, "model.variant", choices=variant_names(), help="the encoder to train")
    p.add_argument("--train-until", metavar="TS",
                   help="read nothing at or after this instant (default: the latest snapshot)")
    p.add_argument("--config", metavar="FILE",
                   help="a JSON PretrainConfig (model, objective, train) in place of the defaults; the flags "
                        "given replace its values")
    add_field(p, "--epochs", PRETRAIN, "train.epochs", type=int,
              help="most epochs; early stopping may end sooner")
    add_field(p, "--seed", PRETRAIN, "train.seed", type=int, help="the model's initialisation and shuffling")
    add_field(p, "--device", PRETRAIN, "train.device", help="auto (CUDA if there is one), cpu, cuda, cuda:N")
    add_field(p, "--threads", PRETRAIN, "train.threads", type=int, help="torch CPU threads (0: torch's own)")
    p.set_defaults(handler=_cmd_pretrain)

    p = sub.add_parser("embed", help=f"embed every user of a snapshot into {USER_EMBEDDINGS.path}")
    p.add_argument("--lake", required=True, help=f"lake root (reads features/* and {MODELS}/)")
    _snapshot_options(p)
    p.add_argument("--model-version", help="e.g. duet-3f2a9c1 (default: the newest model)")
    p.add_argument("--engine", choices=["local", "spark"], default="local",
                   help="local: streamed batches in this process; spark: distributed with mapInArrow")
    p.add_argument("--changed-only", action="store_true",
                   help="re-embed only users whose sequences changed since this snapshot was last embedded")
    add_field(p, "--batch-size", EMBED, "batch_size", type=int, help="users per inference batch")
    add_field(p, "--device", EMBED, "device", help="auto (CUDA if there is one), cpu, cuda")
    add_field(p, "--threads", EMBED, "threads", type=int,
              help="torch CPU threads, local engine (0: torch's own)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_embed)

    p = sub.add_parser("validate", help="run the Great Expectations suites on the lake's tables")
    p.add_argument("--lake", required=True)
    p.add_argument("--table", action="append", metavar="PATH",
                   help=f"validate only this table (a contract path such as {RAW_CLICKS.path}; repeatable; "
                        "default: every table present)")
    p.add_argument("--snapshot", action="append", default=[], metavar="TS",
                   help="check only these snapshots' rows of the tables kept per snapshot (sequences, "
                        "embeddings; repeatable, or --from/--to); the others as without it. Without "
                        "it (and without --all), the snapshots no earlier pass covers, and the other "
                        "tables unless no row changed since their last pass (of a raw table that only "
                        "gained rows, the rows added since)")
    p.add_argument("--all", action="store_true",
                   help="check every table whole, whatever earlier passes hold")
    p.add_argument("--from", dest="date_from", metavar="D", help="first daily snapshot (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="D", help="last daily snapshot (inclusive)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("publish", help="gate one snapshot's embeddings on data quality, then put them online "
                                       "(Feast)")
    p.add_argument("--lake", required=True, help=f"lake root (reads embeddings/, features/, {MODELS}/; "
                                                 f"Feast's registry and SQLite store go under {FEAST}/)")
    p.add_argument("--snapshot", metavar="TS",
                   help="snapshot to publish (default: the model version's latest)")
    p.add_argument("--model-version", help="e.g. duet-3f2a9c1 (default: the newest duet model)")
    _store_options(p, "publish to")
    p.add_argument("--revalidate", action="store_true",
                   help="run the gate even when an earlier `duet validate` pass holds for the same rows")
    p.add_argument("--promote", action="store_true",
                   help="then move the serving alias to this version (without it the alias moves only when "
                        "nothing is served yet, or to a new snapshot of the version it names)")
    _allow_drift_option(p, "publish")
    _spark_options(p)
    p.set_defaults(handler=_cmd_publish)

    p = sub.add_parser("promote", help="move the serving alias to a model version whose snapshot is fully "
                                       "published (one atomic write), then refresh the contract views")
    p.add_argument("--lake", required=True, help=f"lake root (the alias in {FEAST}/serving.json)")
    p.add_argument("--model-version", required=True, help="e.g. duet-3f2a9c1")
    _store_options(p, "promote on")
    _allow_drift_option(p, "promote")
    _spark_options(p)
    p.set_defaults(handler=_cmd_promote)

    p = sub.add_parser("rollback", help="move the serving alias back to the version it named before the "
                                        "last promote")
    p.add_argument("--lake", required=True, help=f"lake root (the alias in {FEAST}/serving.json)")
    _store_options(p, "roll back on")
    _spark_options(p)
    p.set_defaults(handler=_cmd_rollback)

    p = sub.add_parser("retire", help="delete a model version's online rows (not the served one's); it can "
                                      "be promoted again only after a new publish")
    p.add_argument("--lake", required=True, help=f"lake root (the alias in {FEAST}/serving.json)")
    p.add_argument("--model-version", required=True, help="e.g. duet-3f2a9c1")
    _store_options(p, "retire from")
    p.set_defaults(handler=_cmd_retire)

    p = sub.add_parser("consistency", help="read a sample of users online (Feast's SDK, the fast path) and "
                                           "compare them with the Delta rows of the version's published "
                                           "snapshot: mismatch, missing and extra rates (exit 0 consistent, "
                                           "1 not)")
    p.add_argument("--lake", required=True, help=f"lake root ({USER_EMBEDDINGS.path}, {FEAST}/serving.json)")
    p.add_argument("--model-version", help="the version to check (default: the one the serving alias names)")
    p.add_argument("--snapshot", metavar="TS",
                   help="compare with this snapshot (default: the version's fully published one)")
    add_field(p, "--sample", CONSISTENCY, "sample", type=int, metavar="N",
              help="users of the snapshot read online (and half as many users outside it)")
    add_field(p, "--seed", CONSISTENCY, "seed", type=int, help="the sample's seed (the same users every run)")
    add_field(p, "--tolerance", CONSISTENCY, "tolerance", type=float,
              help="largest absolute difference per element that still matches")
    p.add_argument("--server", metavar="URL",
                   help="also read through this feature server (`duet serve`, e.g. http://127.0.0.1:6566)")
    _store_options(p, "check")
    p.set_defaults(handler=_cmd_consistency)

    p = sub.add_parser("examples", help=f"label every click at a cutoff into {TRAINING_EXAMPLES.path}")
    p.add_argument("--lake", required=True)
    p.add_argument("--label-cutoff", required=True, metavar="TS",
                   help="what had been reported by this instant counts (ISO date = 00:00 UTC, or instant)")
    add_field(p, "--attribution-window-days", EXAMPLES, "attribution_window", type=float,
              help="a conversion labels its click if it happened this long after it at most")
    add_field(p, "--report-grace-days", EXAMPLES, "report_grace", type=float,
              help="a click is mature (its label final) this long after its attribution window")
    _spark_options(p)
    p.set_defaults(handler=_cmd_examples)

    p = sub.add_parser("embeddings", help="embeddings made outside duet: `duet embeddings import`")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("import", help="land a Parquet file of user vectors as model version ext-NAME "
                                          "(then run the embedding suite on it)",
                           description=f"Land FILE in {USER_EMBEDDINGS.path} under ext-NAME, replacing "
                                       "an earlier import of that name, with a record of its widths under "
                                       f"{MODELS}/ext-NAME/; then run the embedding suite on those rows. "
                                       "FILE's columns: user_id (string), event_timestamp (timestamp, UTC: "
                                       "a snapshot of the lake), click_embedding (list of numbers) and "
                                       "optionally conversion_embedding (without it, a single-embedding "
                                       "version: conversion_embedding is null, as for shared and "
                                       "click_only).")
    p.add_argument("--lake", required=True, help="lake root (local)")
    p.add_argument("--model-version", required=True, metavar="ext-NAME",
                   help="the version to land under: ext- then lower-case letters, digits, '_' and '-'")
    p.add_argument("--path", required=True, metavar="FILE.parquet", help="the vectors (Parquet)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_embeddings_import)

    p = sub.add_parser("training-set", help=f"build {TRAINING_SET.path} through Feast for the lake's model "
                                            f"versions (needs {TRAINING_EXAMPLES.path}: `duet examples`)")
    p.add_argument("--lake", required=True)
    p.add_argument("--model-version", action="append", metavar="VERSION",
                   help="a model version to include, repeatable (default: every version with embeddings, "
                        "the encoders' and the imported ones)")
    p.add_argument("--splits", nargs=5, metavar=("PRETRAIN_UNTIL", "TRAIN_FROM", "VALID_FROM", "TEST_FROM",
                                                  "TEST_UNTIL"),
                   help="the ranker's periods (instants or dates; default: the demo's plan over the daily "
                        f"snapshots of {RAW_CLICKS.path} up to the examples' label cutoff, as `duet demo` "
                        "chooses)")
    add_field(p, "--attribution-window-days", EXAMPLES, "attribution_window", type=float,
              help="the examples' attribution window, for the default periods")
    add_field(p, "--report-grace-days", EXAMPLES, "report_grace", type=float,
              help="the examples' report grace, for the default periods")
    add_field(p, "--available-at", "ranker.training_set:build_training_set", "available_at",
              choices=("snapshot", "created"),
              help="when an embedding row counts as available to a click: 'snapshot', its snapshot "
                   "precedes the click (the contract's rule); 'created', also written "
                   "(created_timestamp) by then, as a served system saw it; else the click falls back "
                   "to an earlier snapshot's row within the ttl, or null")
    _spark_options(p)
    p.set_defaults(handler=_cmd_training_set)

    p = sub.add_parser("evaluate", help="the ranker's NE ablation on named variants; writes metrics.json and "
                                        "index.html")
    p.add_argument("--lake", required=True,
                   help=f"lake root (reads {TRAINING_SET.path}, {TRAINING_EXAMPLES.path})")
    p.add_argument("--variants", nargs="+", required=True, metavar="VARIANT",
                   help=f"none, {', '.join(variant_names())} (each its newest model version) or a model "
                        "version (duet-3f2a9c1, ext-NAME); none always runs")
    p.add_argument("--out", required=True, help="folder for metrics.json, ablation.json and index.html")
    add_field(p, "--seeds", ABLATION, "seeds", nargs="+", type=int, metavar="S", help="ranker training seeds")
    p.add_argument("--seed", type=int, help="the data's seed, written as metrics.json's seed (default null)")
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("score", help="rank candidate ads for a user with embeddings read online (Feast)")
    p.add_argument("--lake", required=True,
                   help=f"lake root (the ranker under {RANKERS}/, Feast under {FEAST}/)")
    p.add_argument("--user", required=True)
    p.add_argument("--ads", required=True, metavar="A,B,C",
                   help="candidate ad ids, comma separated; AD@ADVERTISER for an ad the lake has not seen")
    p.add_argument("--model-version", help="the ranker of this model version, reading this version's "
                                          "embeddings (default: the one the serving alias names, else the "
                                          "newest duet model)")
    p.add_argument("--as-of", metavar="TS",
                   help="the time of the request (default: now); a stored vector older than the views' ttl "
                        "at this time counts as missing")
    _store_options(p, "read")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("serve", help="Feast's feature server for rankers, reads only (POST "
                                     "/get-online-features), on this machine only unless --host says "
                                     "otherwise")
    p.add_argument("--lake", required=True, help=f"lake root (Feast's registry and SQLite store under "
                                                 f"{FEAST}/)")
    _store_options(p, "serve")
    add_field(p, "--host", SERVER, "host",
              help="address to listen on; reads are not authenticated, so bind an address other than this "
                   "machine's own only where the network admits rankers only")
    add_field(p, "--port", SERVER, "port", type=int, help="port to listen on")
    add_field(p, "--registry-ttl-sec", SERVER, "registry_ttl_sec", type=int,
              help="re-read the registry this often (a publish's new model version)")
    p.set_defaults(handler=_cmd_serve)

    daily = "duet.daily:DailyConfig"
    for name, text in (("daily", "the day's work, and only that: ingest the landed files, build the missing "
                        "snapshots up to --date, embed them with the served model, validate, publish, build "
                        "the matured labels (each step skipped when it is up to date; the last line is a "
                        "JSON run record; exit 0 done, 1 failed, 75 the day has not landed)"),
                       ("backfill", "`duet daily` for every day from --from to --to (the snapshots built in "
                        "one Spark job, the last day published)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--lake", required=True, help="lake root")
        if name == "daily":
            p.add_argument("--date", required=True, metavar="D",
                           help="the day whose snapshot (00:00 UTC) to build, YYYY-MM-DD")
            p.add_argument("--first-date", metavar="D",
                           help="a new lake's first snapshot (without it, --date's); a lake behind catches "
                                "up from the day after its newest snapshot")
        else:
            p.add_argument("--from", dest="date_from", required=True, metavar="D", help="first day")
            p.add_argument("--to", dest="date_to", required=True, metavar="D", help="last day (inclusive)")
        p.add_argument("--landing", metavar="DIR",
                       help="where input files land: DIR/YYYY-MM-DD/{clicks,conversions}*.{csv,parquet,"
                            "jsonl} and a _SUCCESS file once the day is complete (`duet generate --landing`)")
        p.add_argument("--model-version", help="embed and publish this model version (default: the served "
                                               "one, else the newest duet model)")
        add_field(p, "--engine", daily, "engine", choices=["local", "spark"],
                  help="embedding on this machine or on Spark's executors")
        _sequence_flags(p, daily, "sequences.")
        add_field(p, "--attribution-window-days", daily, "attribution_window", type=float,
                  help="labels: a conversion counts within this many days of its click")
        add_field(p, "--report-grace-days", daily, "report_grace", type=float,
                  help="labels: a click is mature this long after its attribution window")
        _store_options(p, "publish")
        p.add_argument("--force", action="store_true", help="run every step, whatever the records say")
        p.add_argument("--dry-run", action="store_true",
                       help="say which steps would run for which days, and why; start nothing")
        _spark_options(p)
        p.set_defaults(handler=_cmd_daily if name == "daily" else _cmd_backfill)

    p = sub.add_parser("maintain", help="OPTIMIZE (compaction) and VACUUM the lake's Delta tables, keeping "
                                        "every file a pending `embed --changed-only` still reads")
    p.add_argument("--lake", required=True, help="lake root")
    p.add_argument("--retention-hours", type=int, metavar="H",
                   help="VACUUM keeps what the versions of the last H hours need (default: Delta's 7 days, "
                        "or longer for a table a pending `embed --changed-only` reads; less than it needs is "
                        "refused)")
    p.add_argument("--dry-run", action="store_true",
                   help="no OPTIMIZE; list what VACUUM would delete and delete nothing")
    p.add_argument("--table", action="append", metavar="PATH",
                   help=f"maintain only this table (a contract path such as {RAW_CLICKS.path}; repeatable; "
                        "default: every table present)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_maintain)

    p = sub.add_parser("status", help="table versions and rows, the newest snapshot per stage, what is "
                                      "served, the last validation and what `duet daily` would do next "
                                      "(no Spark)")
    p.add_argument("--lake", required=True, help="lake root")
    p.add_argument("--landing", metavar="DIR", help="the landing folder, to say whether the next day landed")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded default")
    demo = "duet.demo:DemoConfig"
    p.add_argument("--workdir", required=True, help="writes lake/ and report/ under it")
    add_field(p, "--seed", demo, "seed", type=int, help="the generator's and every encoder's seed")
    p.add_argument("--clicks", help="use this clicks file instead of generating events")
    p.add_argument("--conversions", help="use this conversions file instead of generating events")
    p.add_argument("--taobao", metavar="FILE",
                   help="a Taobao UserBehavior CSV instead of --clicks/--conversions")
    add_field(p, "--users", demo, "generate.users", type=int, help="synthetic users when generating")
    add_field(p, "--days", demo, "generate.days", type=int, help="synthetic days when generating")
    add_field(p, "--setting", demo, "generate.setting",
              help="the generator's named setting when generating, default or duet-targeted (see "
                   "`duet generate --help`)")
    add_field(p, "--conversion-signal", demo, "generate.conversion_signal", type=float,
              help="the generator's conversion signal (0: the control, see `duet generate --help`)")
    add_field(p, "--attribution-window-days", demo, "labels.attribution_window", type=float,
              help="labels: a conversion counts within this many days of its click")
    add_field(p, "--report-grace-days", demo, "labels.report_grace", type=_report_grace,
              metavar="DAYS|measured",
              help="labels: a click is mature this long after its attribution window; measured: the 99th "
                   "percentile of the lake's report delays, in whole days")
    add_field(p, "--pretrain-horizon-days", demo, "encoders.horizon_days", type=float,
              help="encoders: how far ahead pre-training targets look")
    add_field(p, "--pretrain-grace-days", demo, "encoders.report_grace_days", type=float,
              help="encoders: report grace of the conversion targets")
    p.add_argument("--delayed-feedback", action="store_true",
                   help="also train rankers at the start of the test period on clicks whose labels are "
                        "still arriving (matured only, naive, elapsed-time weighted, FNW); compare them on "
                        "the test set")
    p.add_argument("--force", action="store_true",
                   help="re-run every cached stage even when its config, inputs and code are unchanged "
                        "since it last passed (otherwise its recorded result is reused)")
    _spark_options(p)
    p.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DuetError as e:
        # The stages name the inputs at fault; the command line knows which flags set them.
        flags = flags_for(parser, args, e.fields)
        print(f"duet: error: {e}" + (f" (see {', '.join(flags)})" if flags else ""), file=sys.stderr)
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
