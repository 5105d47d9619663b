#!/usr/bin/env bash
# Brings a checkout to a working state, from nothing or from a previous run:
#   .venv/   the locked Python dependencies (requirements.lock) and duet itself (editable)
#   .jars/   the Delta Lake jars for Spark (infra/jars/pom.xml, fetched with Maven)
#   .jars-s3/   S3A for an s3a:// lake: hadoop-aws and the AWS SDK bundle (infra/jars/s3/pom.xml)
#   .venv/share/duet/spark-classes.jsa   the Spark driver's class-data archive (duet/class_archive.py)
# Each part is skipped when its inputs have not changed since it last succeeded (a stamp file
# holds the hash of its inputs), so a warm re-run takes seconds. Downloads are cached by uv
# (~/.cache/uv) and Maven (~/.m2), never in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v java >/dev/null || die "Java 17+ is needed for Spark (install OpenJDK 17, e.g. apt-get install openjdk-17-jdk-headless)"
java_major=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)
[ "${java_major:-0}" -ge 17 ] || die "Java ${java_major:-unknown} found; Spark 4.1 needs Java 17 or newer"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || die "Python 3.11 is needed (set PYTHON=/path/to/python3.11)"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Python environment -------------------------------------------------------------------------
# Bytecode is compiled once at install time (compileall over site-packages): uv does not compile by
# default, and where PYTHONDONTWRITEBYTECODE is set (as on our dev machines) no import ever writes a .pyc,
# so every Python process (each CLI call, pytest worker, Spark Python worker) would compile torch, Feast
# and Great Expectations from source again (`import feast`: 46 s without, 22 s with, on a loaded 2-core
# machine). This script is part of the stamp, so a change to how the environment is built rebuilds it.
want=$(hash_of requirements.lock pyproject.toml scripts/setup.sh)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY"
  "$PY" -m venv .venv
fi
if [ "$(cat .venv/.duet-stamp 2>/dev/null)" != "$want" ]; then
  say "installing locked dependencies (first time: ~3 GB incl. torch; cached afterwards)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
  .venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements.lock
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
  say "compiling site-packages to bytecode (once per install)"
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # A few files are for newer Pythons only (torch's py312 test helpers): never imported, so not fatal.
  .venv/bin/python -m compileall -q -j 0 "$site" > /dev/null || say "some files did not compile (newer-Python-only files); imports are unaffected"
  echo "$want" > .venv/.duet-stamp
else
  say ".venv is up to date"
fi

# --- Delta Lake jars ----------------------------------------------------------------------------
want=$(hash_of infra/jars/pom.xml)
if [ "$(cat .jars/.duet-stamp 2>/dev/null)" != "$want" ]; then
  command -v mvn >/dev/null || die "Maven is needed once to fetch the Delta jars (apt-get install maven)"
  say "fetching Delta jars with Maven into .jars/"
  rm -rf .jars.tmp
  mvn -q -B -f infra/jars/pom.xml dependency:copy-dependencies \
      -DincludeGroupIds=io.delta -DoutputDirectory="$PWD/.jars.tmp" >&2 \
    || die "Maven could not fetch the Delta jars (see the output above)"
  echo "$want" > .jars.tmp/.duet-stamp
  rm -rf .jars && mv .jars.tmp .jars   # swap in whole: a half-fetched folder is never used
else
  say ".jars is up to date"
fi
# --- S3A jars: hadoop-aws and the AWS SDK v2 bundle, for a lake on S3 (docs/OBJECT_STORAGE.md) ---------
# A folder of their own: core/spark.py puts them on the class path only of a session whose lake or input
# is an s3a:// URI, as a local session copies each of its jars into its temporary folder (641 MB for the
# bundle). Hard-linked from ~/.m2 where it is on the same file system (no second copy), copied otherwise.
want=$(hash_of infra/jars/s3/pom.xml)
if [ "$(cat .jars-s3/.duet-stamp 2>/dev/null)" != "$want" ]; then
  command -v mvn >/dev/null || die "Maven is needed once to fetch the S3A jars (apt-get install maven)"
  say "fetching the S3A jars with Maven into .jars-s3/ (first time: ~650 MB into ~/.m2)"
  rm -rf .jars-s3.tmp && mkdir .jars-s3.tmp
  mvn -q -B -f infra/jars/s3/pom.xml dependency:build-classpath -Dmdep.outputFile="$PWD/.jars-s3.tmp/.classpath" >&2 \
    || die "Maven could not fetch the S3A jars (see the output above)"
  IFS=: read -r -a s3_jars < .jars-s3.tmp/.classpath || true   # one line, no newline at its end
  for jar in "${s3_jars[@]}"; do ln -f "$jar" .jars-s3.tmp/ 2>/dev/null || cp "$jar" .jars-s3.tmp/; done
  rm .jars-s3.tmp/.classpath
  echo "$want" > .jars-s3.tmp/.duet-stamp
  rm -rf .jars-s3 && mv .jars-s3.tmp .jars-s3
else
  say ".jars-s3 is up to date"
fi
# --- The Spark driver's class-data archive --------------------------------------------------------
# Built once per environment and Java (about 3 minutes on a 2-core machine); every later driver maps it
# and starts faster (a cold three-row ingest 57 -> 48 s; BENCHMARKS.md, "The driver JVM's start").
# Optional: without it Spark starts the slow way, so a failed build warns and goes on.
# DUET_CLASS_ARCHIVE=FILE builds (and later maps) that file instead; set empty, it skips the archive.
if [ "${DUET_CLASS_ARCHIVE-unset}" != "" ]; then
  archive=${DUET_CLASS_ARCHIVE:-$(.venv/bin/python -c 'from core.spark import CLASS_ARCHIVE; print(CLASS_ARCHIVE)')}
  want=$({ cat .venv/.duet-stamp .jars/.duet-stamp duet/class_archive.py; java -version 2>&1; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$archive.duet-stamp" 2>/dev/null)" != "$want" ] || [ ! -f "$archive" ]; then
    say "building the Spark driver's class-data archive (once per environment)"
    rm -f "$archive.duet-stamp"
    if .venv/bin/python -m duet.class_archive --out "$archive" > /dev/null 2> .venv/class-archive.log; then
      echo "$want" > "$archive.duet-stamp"
    else
      say "warning: no class-data archive (see .venv/class-archive.log); Spark will start without it"
    fi
  else
    say "the class-data archive is up to date"
  fi
fi
say "ready"
