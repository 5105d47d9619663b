"""The one SparkSession factory (Delta enabled, UTC, local by default, any cluster by master URL), and
the contract tables as Spark schemas.

Every job and test gets its session from ``spark_session``; nothing else calls ``SparkSession.builder``.
The Delta jars come from ``.jars/`` in the checkout (fetched once by scripts/setup.sh with Maven), or
from ``$DUET_JARS``; without either, Spark's Ivy downloads them (``configure_spark_with_delta_pip``).
A session whose lake or input is an ``s3a://`` URI also gets S3A (``.jars-s3/`` or ``$DUET_S3_JARS``) and
the S3 server's settings (``core.object_storage``; docs/OBJECT_STORAGE.md).
Under ``spark-submit`` the master and jars given there win: this module only fills in what is unset.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from core import object_storage
from core.contracts import Table
from core.errors import DuetError

_REPO_ROOT = Path(__file__).resolve().parent.parent

# Settings every duet session needs, whatever the master.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Contract: every timestamp is UTC. Session time zone governs parsing and display.
    "spark.sql.session.timeZone": "UTC",
    # Parquet written by Spark and read by pandas/deltalake without nanosecond surprises.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}

# JVM options that get -Duser.timezone=UTC appended to whatever the user passes.
JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")

# The driver JVM's class-data-sharing archive (JDK AppCDS): the classes a duet job loads, parsed and
# verified once, by scripts/setup.sh (``python -m duet.class_archive``), and mapped by every later start.
# A cold driver spends most of its first minute loading and compiling classes on a small machine; the
# archive takes about a sixth off that start, and with the JIT stopped at C1 as the tests' short runs do,
# about half (BENCHMARKS.md, "The driver JVM's start"). It belongs to one Java and one
# pyspark installation, so it lives in the Python environment (``sys.prefix``), and a JVM whose class path
# does not match it ignores it (``-Xshare:auto``, the default). ``$DUET_CLASS_ARCHIVE`` names another
# file; set to an empty string it turns the archive off.
CLASS_ARCHIVE = Path(sys.prefix) / "share" / "duet" / "spark-classes.jsa"

# Sensible defaults for a small local machine; any of them can be overridden with --conf.
LOCAL_DEFAULTS: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.default.parallelism": "4",
    "spark.driver.memory": "4g",
    "spark.ui.showConsoleProgress": "false",
    # Delta reads its log with this many tasks; the default (50) is for clusters.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.adaptive.enabled": "true",
}


_SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(), "timestamp": T.TimestampType(), "double": T.DoubleType(),
    "float": T.FloatType(), "int": T.IntegerType(), "long": T.LongType(), "boolean": T.BooleanType(),
}


def spark_type(type_name: str) -> T.DataType:
    """A contract type string (``core.contracts.Column.type``) as a Spark type."""
    if type_name.startswith("array<"):
        return T.ArrayType(spark_type(type_name[len("array<"):-1]))
    return _SPARK_TYPES[type_name]


def spark_schema(table: Table) -> T.StructType:
    """``table``'s columns as the Spark schema its Delta table is created with."""
    return T.StructType([T.StructField(c.name, spark_type(c.type), c.nullable) for c in table.fields])


def delta_identifier(location: str) -> str:
    """A path-based Delta table as a Spark SQL identifier ``delta.`path```, a backtick in it doubled."""
    return "delta.`" + location.replace("`", "``") + "`"


def create_table(spark: SparkSession, table: Table, location: str,
                 properties: Mapping[str, str] | None = None) -> None:
    """Create ``table`` at ``location`` from its contract if it is not there (NOT NULL columns become Delta
    constraints), partitioned as ``table.partition`` declares (a generated partition column is computed by
    Delta on every write). By SQL with the path quoted: Delta's ``DeltaTable.createIfNotExists()
    .location(path)`` puts the path into an identifier unescaped, so a backtick in a lake path broke it."""
    columns = [f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}"
               for f in spark_schema(table).fields]
    part = table.partition
    if part is not None and part.generated:
        columns.append(f"`{part.column}` {part.type} GENERATED ALWAYS AS ({part.generated})")
    sql = f"CREATE TABLE IF NOT EXISTS {delta_identifier(location)} ({', '.join(columns)}) USING delta"
    if part is not None:
        sql += f" PARTITIONED BY (`{part.column}`)"
    if properties:
        sql += " TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in properties.items()) + ")"
    spark.sql(sql)


UTC_NAMES = ("UTC", "Etc/UTC", "Z", "+00:00", "GMT", "Etc/GMT")


def require_utc(spark: SparkSession) -> None:
    """Refuse a session whose SQL time zone is not UTC (a session not built by ``spark_session``): Spark
    would read zone-less timestamps and write snapshot literals in that zone."""
    zone = spark.conf.get("spark.sql.session.timeZone")
    if zone not in UTC_NAMES:
        raise DuetError(f"the SparkSession's time zone is {zone}; duet needs spark.sql.session.timeZone=UTC "
                        "(sessions from core.spark.spark_session have it)")


def delta_jars(jars_dir: str | os.PathLike | None = None) -> list[str]:
    """The Delta jar files to put on Spark's class path, or [] if none are cached locally."""
    folder = Path(jars_dir or os.environ.get("DUET_JARS") or _REPO_ROOT / ".jars")
    return sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []


def s3_jars(jars_dir: str | os.PathLike | None = None) -> list[str]:
    """hadoop-aws and the AWS SDK bundle (S3A, for an ``s3a://`` lake), or [] if they are not fetched.

    Kept out of ``delta_jars``: a local session copies every jar of ``spark.jars`` into its temporary
    folder, 641 MB for the bundle alone, so only a session that reads or writes S3 gets them
    (``uses_s3``; docs/OBJECT_STORAGE.md has the measurements)."""
    folder = Path(jars_dir or os.environ.get("DUET_S3_JARS") or _REPO_ROOT / ".jars-s3")
    return sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []


def uses_s3(locations: Sequence[str] = ()) -> bool:
    """Whether a session reads or writes S3: one of ``locations`` (the caller's lake and inputs), or else
    one of this process's arguments (``duet ingest --lake s3a://...``, the same under spark-submit), is
    an ``s3a://`` URI."""
    return object_storage.any_on_s3([*locations, *sys.argv[1:]])


def class_archive() -> Path | None:
    """The driver's class-data archive, if one has been built (``CLASS_ARCHIVE``, ``$DUET_CLASS_ARCHIVE``)."""
    named = os.environ.get("DUET_CLASS_ARCHIVE")
    if named == "":
        return None
    archive = Path(named) if named else CLASS_ARCHIVE
    return archive if archive.is_file() else None


def driver_start_options() -> list[str]:
    """JVM options that make the driver start faster and change nothing it computes: the class-data
    archive, its log lines (a mismatch after an upgrade only means a slower start) kept quiet."""
    archive = class_archive()
    if archive is None:
        return []
    option = f"-XX:SharedArchiveFile={archive}"
    if re.search(r"[^\w/.:+@=-]", option):
        # Spark splits the options string at spaces unless quoted; a path with a quote is left out.
        if "'" in option or "\\" in option:
            return []
        option = f"'{option}'"
    return [option, "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` from repeated ``--conf`` flags into a dict; a pair without '=' is an error."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DuetError(f"a Spark setting is key=value, got {pair!r}", fields=("conf",))
        conf[key.strip()] = value
    return conf


def spark_session(
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
    app_name: str = "duet",
    verbose: bool = False,
    locations: Sequence[str] = (),
) -> SparkSession:
    """Return the active SparkSession or build one with Delta, UTC and local defaults.

    ``master`` is ``local[*]`` unless given or already set by spark-submit. ``conf`` overrides every
    default except the Delta/UTC settings in ``REQUIRED_CONF``, which jobs rely on. ``locations`` (the
    lake, the inputs) decide with the process's arguments whether S3A is added (``uses_s3``).
    """
    user_conf = dict(conf or {})
    for key, value in REQUIRED_CONF.items():
        if key in user_conf and user_conf[key] != value:
            raise DuetError(f"the Spark setting {key}={user_conf[key]} conflicts with duet's required "
                            f"{key}={value}", fields=("conf",))
    active = SparkSession.getActiveSession()
    if active is not None:
        return active

    from pyspark import SparkConf, SparkContext

    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already running and holds the submitted settings (the master
        # included); a SparkConf made before Python connects to it is empty, and the job would run on
        # local[*] inside the driver whatever --master said.
        SparkContext._ensure_initialized()
    submitted = SparkConf()  # holds what spark-submit / PYSPARK_SUBMIT_ARGS already set
    builder = SparkSession.builder.appName(app_name)
    resolved_master = master or submitted.get("spark.master", None) or "local[*]"
    builder = builder.master(resolved_master)

    settings: dict[str, str] = {}
    if resolved_master.startswith("local"):
        settings.update(LOCAL_DEFAULTS)
        # Python workers (mapInArrow, UDFs) run this interpreter, whose packages (torch, the encoders)
        # the jobs need; PySpark would otherwise start whatever `python3` is on the PATH. PySpark reads
        # the variable when the context starts (the spark.pyspark.python setting is spark-submit's).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    s3 = uses_s3(locations)
    if s3:
        s3_settings = object_storage.spark_settings()
        settings.update({k: v for k, v in s3_settings.items() if not submitted.contains(k)})
    settings.update(user_conf)
    settings.update(REQUIRED_CONF)
    for key in JAVA_OPTIONS:
        options = [user_conf.get(key, ""), "-Duser.timezone=UTC"]
        if key.startswith("spark.driver"):
            if not verbose:
                # A file URI: percent-encoded, so a checkout path with a space cannot split the options.
                options.append(f"-Dlog4j.configurationFile={Path(__file__).with_name('log4j2.properties').as_uri()}")
            options += driver_start_options()
        settings[key] = " ".join(o for o in options if o)

    jars = delta_jars()
    if not submitted.contains("spark.jars.packages") and not submitted.contains("spark.jars"):
        if s3:
            found = s3_jars()
            if not found:
                raise DuetError("a lake or input on S3 (s3a://) needs hadoop-aws on Spark's class path: run "
                                "scripts/setup.sh (it fetches .jars-s3/) or set DUET_S3_JARS to their folder")
            settings["spark.jars"] = ",".join(filter(None, [settings.get("spark.jars"), *found]))
        if jars:
            settings["spark.jars"] = ",".join(filter(None, [settings.get("spark.jars"), *jars]))
        else:
            from delta import configure_spark_with_delta_pip

            builder = configure_spark_with_delta_pip(builder)

    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN" if verbose else "ERROR")
    return spark


@contextmanager
def session_settings(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """The session's ``settings`` inside the block, its own values (or none) after it."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
