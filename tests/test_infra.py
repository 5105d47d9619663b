"""The cluster configurations under infra/ (infra/README.md), checked where they can be checked here.

No Spark, no cluster and no network in the fast tests: the manifests are parsed with PyYAML and their
fields compared with what the project says elsewhere (the entry point duet/submit_entry.py, the image, the
Delta settings core/spark.py sets, the Hadoop version inside pyspark); the shell scripts pass `bash -n` and
run against stand-ins for spark-submit, kubectl and `duet` that record their arguments and answer with a
chosen exit code. Airflow is not installed and is no dependency of duet: the DAG is checked by parsing it
with `ast`, and its exit-code handling runs against stand-ins for the few Airflow names it imports.
The Dockerfile cannot be built here (no Docker daemon): its instructions are read as text.

One test, marked `cluster` (`make test-cluster`, or `.venv/bin/python -m pytest tests/test_infra.py -m
cluster`), starts a Spark standalone cluster on loopback with infra/spark/standalone.sh and runs a job on
it through infra/submit.sh.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHORT_RUN_ENV

INFRA = REPO / "infra"
SPARK_DIR = INFRA / "spark"
K8S = SPARK_DIR / "k8s"
DAG_FILE = INFRA / "airflow" / "duet_daily_dag.py"
ENTRY_IN_IMAGE = "local:///opt/duet/duet/submit_entry.py"
SCRIPTS = [INFRA / "submit.sh", SPARK_DIR / "standalone.sh", SPARK_DIR / "yarn-submit.sh",
           K8S / "submit-k8s.sh", K8S / "entrypoint.sh"]


# --- what the rest of the project says ---------------------------------------------------------------

def _module_constant(path: Path, name: str):
    """A literal constant of a module, read without importing it (core/spark.py imports pyspark)."""
    for node in ast.parse(path.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in {path}")


REQUIRED_CONF: dict[str, str] = _module_constant(REPO / "core/spark.py", "REQUIRED_CONF")
JAVA_OPTIONS: tuple[str, ...] = _module_constant(REPO / "core/spark.py", "JAVA_OPTIONS")


def _spark_defaults(text: str | None = None) -> dict[str, str]:
    """spark-defaults.conf as Spark reads it: `key value` lines, `#` comment lines skipped."""
    text = (SPARK_DIR / "spark-defaults.conf").read_text() if text is None else text
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def _pyspark_hadoop_version() -> str:
    """The Hadoop client bundled with the installed pyspark, from its jar's name (pyspark not imported)."""
    jars = Path(importlib.util.find_spec("pyspark").submodule_search_locations[0]) / "jars"
    [jar] = jars.glob("hadoop-client-api-*.jar")
    return re.fullmatch(r"hadoop-client-api-(.+)\.jar", jar.name).group(1)


def _yaml(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- shell scripts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_parse_and_are_executable(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_standalone_refuses_a_start_without_a_folder_and_stops_nothing_twice(tmp_path):
    script = str(SPARK_DIR / "standalone.sh")
    result = subprocess.run([script, "start"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--dir DIR is required" in result.stderr
    result = subprocess.run([script, "start", "--dir", str(tmp_path), "--workers", "two"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not a number: two" in result.stderr
    for _ in range(2):   # nothing running: stop succeeds, twice
        assert subprocess.run([script, "stop", "--dir", str(tmp_path / "none")], timeout=30).returncode == 0
    result = subprocess.run([script, "status", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "no master running" in result.stderr


# --- spark-defaults.conf ---------------------------------------------------------------------------------

def test_spark_defaults_hold_the_settings_core_spark_requires():
    """Every setting core/spark.py requires of a session, with core/spark.py's value; the JVMs in UTC."""
    conf = _spark_defaults()
    assert REQUIRED_CONF, "REQUIRED_CONF not read from core/spark.py"
    for key, value in REQUIRED_CONF.items():
        assert conf.get(key) == value, (key, conf.get(key), value)
    for key in JAVA_OPTIONS:
        assert "-Duser.timezone=UTC" in conf[key].split(), key


def test_spark_defaults_read_s3a_without_secrets():
    conf = _spark_defaults()
    assert conf["spark.hadoop.fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    providers = conf["spark.hadoop.fs.s3a.aws.credentials.provider"].split(",")
    # AWS SDK v2 names (Hadoop 3.4); the v1 chain is gone, and the v2 default chain is a shared singleton.
    assert not any(p.startswith("com.amazonaws.") for p in providers), providers
    assert "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider" in providers
    assert not any(re.search(r"(access|secret)\.key|session\.token|password", k) for k in conf), conf
    assert int(conf["spark.sql.shuffle.partitions"]) > 8   # a cluster's number, not the laptop's


def test_s3a_jars_match_the_hadoop_inside_pyspark():
    """hadoop-aws must be the Hadoop version pyspark bundles: infra/jars/s3/pom.xml (scripts/setup.sh's
    and the image's jars) and the spark.jars.packages line offered in spark-defaults.conf both name it."""
    hadoop = _pyspark_hadoop_version()
    pom = (INFRA / "jars/s3/pom.xml").read_text()
    assert re.search(r"<hadoop.version>(.+?)</hadoop.version>", pom).group(1) == hadoop
    assert "<artifactId>hadoop-aws</artifactId>" in pom
    defaults = (SPARK_DIR / "spark-defaults.conf").read_text()
    offered = re.findall(r"org\.apache\.hadoop:hadoop-aws:([\w.]+)", defaults)
    assert offered and set(offered) == {hadoop}, offered


# --- Kubernetes -------------------------------------------------------------------------------------------

def test_sparkapplication_runs_the_daily_job_from_the_image():
    app = _yaml("sparkapplication.yaml")
    assert (app["apiVersion"], app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    spec = app["spec"]
    assert (spec["type"], spec["mode"], spec["pythonVersion"]) == ("Python", "cluster", "3")
    assert spec["mainApplicationFile"] == ENTRY_IN_IMAGE
    assert (REPO / "duet/submit_entry.py").is_file()
    args = spec["arguments"]
    assert args[0] == "daily"
    assert args[args.index("--lake") + 1].startswith("s3a://")
    assert dt.date.fromisoformat(args[args.index("--date") + 1])
    assert "--landing" in args
    assert spec["image"] == _image()
    assert spec["restartPolicy"]["type"] == "OnFailure" and spec["restartPolicy"]["onFailureRetries"] >= 1
    assert spec["sparkVersion"] == _locked("pyspark")
    assert spec["driver"]["serviceAccount"] == spec["executor"]["serviceAccount"] == _service_account()
    # The settings of spark-defaults.conf, which a cluster-mode driver would not read from the image.
    conf, defaults = spec["sparkConf"], _spark_defaults()
    for key, value in REQUIRED_CONF.items():
        assert conf[key] == value, key
    for key, value in conf.items():
        if key in defaults:
            assert str(value) == defaults[key], key
    assert (conf["spark.driver.extraClassPath"] == conf["spark.executor.extraClassPath"]
            == "/opt/duet/.jars/*:/opt/duet/.jars-s3/*")


def test_cronjob_runs_duet_daily_once_at_a_time_and_reads_exit_75_as_retry():
    cron = _yaml("cronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] in ("Etc/UTC", "UTC")
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"          # podFailurePolicy requires it
    assert pod["serviceAccountName"] == _service_account()
    [container] = pod["containers"]
    assert container["image"] == _image()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DUET_IMAGE"] == _image()            # the executors' image is the driver's
    actions = {}
    for rule in job["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes:
            assert codes["containerName"] == container["name"] and codes["operator"] == "In"
            actions.update({code: rule["action"] for code in codes["values"]})
    assert actions == {75: "Ignore", 2: "FailJob"}  # 1 (and anything else) counts against backoffLimit
    assert job["backoffLimit"] >= 1
    assert job["activeDeadlineSeconds"] < 24 * 3600  # a Job ends before the next day's run is due
    script = container["args"][0]
    assert re.search(r"\bduet daily\b", script) and "--master k8s://https://" in script
    assert "date -u +%F" in script


def _run_cron_script(tmp_path: Path, job_name: str, duet_exit: int, **env: str) -> tuple[int, list[str]]:
    """The CronJob's container script with a stand-in `duet` that records its arguments."""
    pod = _yaml("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "duet-args"
    _executable(bin_dir / "duet", f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\nexit {duet_exit}\n')
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_NAME": job_name, "POD_NAME": "p-1",
                   "POD_NAMESPACE": "duet", "POD_IP": "10.1.2.3", "DUET_LAKE": "s3a://b/lake",
                   "DUET_LANDING": "s3a://b/landing", "DUET_IMAGE": "img:1", "DUET_EXECUTORS": "2",
                   "DUET_RETRY_AFTER_S": "0", **env}
    result = subprocess.run(["bash", "-c", script], env=environment, capture_output=True, text=True,
                            timeout=30)
    return result.returncode, record.read_text().splitlines()


def test_cronjob_script_runs_the_scheduled_date_and_passes_exit_codes_on(tmp_path):
    scheduled = dt.datetime(2026, 2, 1, 1, 30, tzinfo=dt.UTC)
    job = f"duet-daily-{int(scheduled.timestamp()) // 60}"   # how the CronJob controller names its Jobs
    code, args = _run_cron_script(tmp_path, job, 0)
    assert code == 0
    assert args[:2] == ["daily", "--lake"] and args[args.index("--date") + 1] == "2026-02-01"
    assert args[args.index("--master") + 1].startswith("k8s://https://")
    assert "spark.kubernetes.container.image=img:1" in args and "spark.driver.host=10.1.2.3" in args
    # A Job made by hand: today, in UTC; DUET_DATE wins over both.
    code, args = _run_cron_script(tmp_path, "duet-daily-now", 0)
    now = dt.datetime.now(dt.UTC)
    assert args[args.index("--date") + 1] in {now.date().isoformat(),
                                              (now - dt.timedelta(minutes=1)).date().isoformat()}
    code, args = _run_cron_script(tmp_path, job, 0, DUET_DATE="2026-01-15", DUET_DAILY_ARGS="--engine spark")
    assert args[args.index("--date") + 1] == "2026-01-15" and args[-2:] == ["--engine", "spark"]
    for duet_exit in (75, 1, 2):
        assert _run_cron_script(tmp_path, job, duet_exit)[0] == duet_exit


def test_every_driver_pod_mounts_the_lakes_home_at_duet_home():
    """A lake on S3 keeps its models, Feast files and run records in ``$DUET_HOME`` (core.lake): the
    CronJob's pod and the operator's driver both mount the claim of home-pvc.yaml there."""
    claim = _yaml("home-pvc.yaml")
    assert claim["kind"] == "PersistentVolumeClaim" and claim["metadata"]["namespace"] == "duet"
    name = claim["metadata"]["name"]
    pod = _yaml("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    app = _yaml("sparkapplication.yaml")["spec"]
    container = pod["containers"][0]
    for volumes, mounts, env in ((pod["volumes"], container["volumeMounts"], container["env"]),
                                 (app["volumes"], app["driver"]["volumeMounts"], app["driver"]["env"])):
        home = {e["name"]: e.get("value") for e in env}["DUET_HOME"]
        [volume] = [v for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") == name]
        assert {m["name"]: m["mountPath"] for m in mounts}[volume["name"]] == home


def test_rbac_lets_the_drivers_manage_executor_pods():
    docs = list(yaml.safe_load_all((K8S / "rbac.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding"}
    assert kinds["ServiceAccount"]["metadata"]["name"] == _service_account()
    [rule] = kinds["Role"]["rules"]
    assert {"pods", "configmaps", "services"} <= set(rule["resources"])
    assert {"create", "delete", "watch", "list"} <= set(rule["verbs"])
    assert kinds["RoleBinding"]["subjects"][0]["name"] == _service_account()


def test_dockerfile_builds_the_locked_environment_and_the_jars_like_setup_sh():
    text = (K8S / "Dockerfile").read_text()
    setup = (REPO / "scripts/setup.sh").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "openjdk-17-jre-headless" in text
    # requirements.lock, with the uv that scripts/setup.sh installs
    assert re.search(r"^COPY requirements\.lock ", text, re.M) and "-r requirements.lock" in text
    uv = re.search(r'"uv==([\w.]+)"', setup).group(1)
    assert f'"uv=={uv}"' in text
    # the jars' pom, fetched the way scripts/setup.sh fetches it
    assert re.search(r"^COPY infra/jars/pom\.xml ", text, re.M)
    assert "-f infra/jars/pom.xml dependency:copy-dependencies" in text
    assert "-DincludeGroupIds=io.delta" in setup and "-DincludeGroupIds=io.delta" in text
    assert re.search(r"^COPY infra/jars/s3/pom\.xml ", text, re.M)
    assert "-f infra/jars/s3/pom.xml dependency:build-classpath" in setup      # as setup.sh fetches them
    assert "-f infra/jars/s3/pom.xml dependency:build-classpath" in text
    assert re.search(r"^COPY --from=jars /out/delta/ \.jars/$", text, re.M)   # where core/spark.py looks
    assert re.search(r"^COPY --from=jars /out/s3/ \.jars-s3/$", text, re.M)
    # every package pyproject.toml installs is in the image, and the entry point the manifests name
    include = re.search(r'include = \[([^\]]*)\]', (REPO / "pyproject.toml").read_text()).group(1)
    for package in re.findall(r'"(\w+)\*"', include):
        assert re.search(rf"^COPY {package} {package}$", text, re.M), package
    assert re.search(r"^WORKDIR /opt/duet$", text, re.M)  # ENTRY_IN_IMAGE: /opt/duet/duet/submit_entry.py
    assert 'ENTRYPOINT ["/opt/duet/infra/spark/k8s/entrypoint.sh"]' in text
    assert ".venv" in (K8S / "Dockerfile.dockerignore").read_text().splitlines()  # GBs out of the context


def test_entrypoint_builds_the_executor_command(tmp_path):
    env = {"PATH": os.environ["PATH"], "SPARK_HOME": "/sh", "JAVA_HOME": "/jh",
           "DUET_ENTRYPOINT_DRY_RUN": "1", "SPARK_CLASSPATH": "/opt/duet/.jars/*",
           "SPARK_EXECUTOR_MEMORY": "6g", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@d:7078",
           "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "2", "SPARK_APPLICATION_ID": "spark-1",
           "SPARK_EXECUTOR_POD_IP": "10.0.0.9", "SPARK_EXECUTOR_POD_NAME": "duet-exec-3",
           "SPARK_JAVA_OPT_10": "-Dlast", "SPARK_JAVA_OPT_0": "-Dfirst",
           "SPARK_JAVA_OPT_1": "-Duser.timezone=UTC"}
    run = subprocess.run([str(K8S / "entrypoint.sh"), "executor"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    cmd = run.stdout.splitlines()
    assert cmd[:4] == ["/jh/bin/java", "-Dfirst", "-Duser.timezone=UTC", "-Dlast"]
    assert cmd[cmd.index("-cp") + 1].startswith("/sh/conf:/opt/duet/.jars/*:/sh/jars/*")
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in cmd
    assert cmd[cmd.index("--executor-id") + 1] == "3" and cmd[cmd.index("--podName") + 1] == "duet-exec-3"
    run = subprocess.run([str(K8S / "entrypoint.sh"), "driver", "--class", "x"], env=env, capture_output=True,
                         text=True)
    assert run.stdout.splitlines()[0] == "/sh/bin/spark-submit" and "client" in run.stdout.splitlines()
    run = subprocess.run([str(K8S / "entrypoint.sh"), "duet", "daily", "--date", "2026-02-01"], env=env,
                         capture_output=True, text=True)
    assert run.stdout.splitlines() == ["duet", "daily", "--date", "2026-02-01"]


def _fake_spark_home(tmp_path: Path) -> tuple[Path, Path]:
    """A SPARK_HOME whose spark-submit records its arguments and exits 0."""
    home, record = tmp_path / "spark-home", tmp_path / "submit-args"
    (home / "bin").mkdir(parents=True)
    _executable(home / "bin/spark-submit", f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\nexit 0\n')
    return home, record


def test_submit_k8s_submits_the_image_entry_point_and_returns_the_driver_exit_code(tmp_path):
    home, record = _fake_spark_home(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # kubectl answers the driver container's exit code: 75, inputs not landed
    _executable(bin_dir / "kubectl", '#!/usr/bin/env bash\necho "$@" >> "$(dirname "$0")/kubectl-args"\n'
                'printf 75\n')
    env = {**os.environ, "SPARK_HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("K8S_MASTER", None)
    daily = ["daily", "--lake", "s3a://b/lake", "--date", "2026-02-01", "--landing", "s3a://b/landing"]
    run = subprocess.run([str(K8S / "submit-k8s.sh"), "--master", "k8s://https://10.0.0.1:443", "--image",
                          "reg/duet:9", "--", *daily], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 75, run.stderr
    args = record.read_text().splitlines()
    assert args[args.index("--master") + 1] == "k8s://https://10.0.0.1:443"
    assert args[args.index("--deploy-mode") + 1] == "cluster"
    assert args[args.index("--properties-file") + 1] == str(SPARK_DIR / "spark-defaults.conf")
    assert "spark.kubernetes.container.image=reg/duet:9" in args
    assert args[args.index(ENTRY_IN_IMAGE) + 1:] == daily
    pod = next(a.split("=", 1)[1] for a in args if a.startswith("spark.kubernetes.driver.pod.name="))
    assert pod in (bin_dir / "kubectl-args").read_text()
    # no master, or an unknown job: a usage error before anything starts
    script = str(K8S / "submit-k8s.sh")
    run = subprocess.run([script, "--", "ingest"], env=env, capture_output=True, text=True)
    assert run.returncode == 2 and "k8s://" in run.stderr
    run = subprocess.run([script, "--master", "k8s://https://h:443", "--", "nope"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no such job" in run.stderr


def test_yarn_submit_is_submit_sh_with_yarn_options(tmp_path):
    home, record = _fake_spark_home(tmp_path)
    archive = tmp_path / "duet-venv.tar.gz"
    archive.write_bytes(b"")
    (tmp_path / "hadoop-conf").mkdir()
    env = {**os.environ, "SPARK_HOME": str(home), "HADOOP_CONF_DIR": str(tmp_path / "hadoop-conf"),
           "DUET_VENV_ARCHIVE": str(archive)}
    run = subprocess.run([str(SPARK_DIR / "yarn-submit.sh"), "--queue", "etl", "--", "daily", "--lake",
                          "s3a://b/lake", "--date", "2026-02-01", "--landing", "s3a://b/landing"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    args = record.read_text().splitlines()
    assert args[args.index("--master") + 1] == "yarn" and args[args.index("--deploy-mode") + 1] == "cluster"
    assert args[args.index("--archives") + 1] == f"{archive}#environment"
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python" in args
    assert args[args.index("--py-files") + 1].endswith("duet_jobs.zip")       # infra/submit.sh's zip
    assert args[args.index("--queue") + 1] == "etl"
    # the last --driver-java-options (spark-submit keeps the last) is yarn-submit's: files beside the driver
    options = [args[i + 1] for i, a in enumerate(args) if a == "--driver-java-options"]
    assert options[-1] == "-Duser.timezone=UTC -Dlog4j.configurationFile=log4j2.properties"
    assert args[args.index(str(REPO / "duet/submit_entry.py")) + 1] == "daily"
    del env["HADOOP_CONF_DIR"]
    run = subprocess.run([str(SPARK_DIR / "yarn-submit.sh"), "--", "ingest"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "HADOOP_CONF_DIR" in run.stderr


def _image() -> str:
    return _yaml("sparkapplication.yaml")["spec"]["image"]


def _service_account() -> str:
    return next(d for d in yaml.safe_load_all((K8S / "rbac.yaml").read_text())
                if d["kind"] == "ServiceAccount")["metadata"]["name"]


def _locked(package: str) -> str:
    return re.search(rf"^{package}==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)


def test_the_image_name_is_one_everywhere():
    """The tag the Dockerfile's build line gives is the image the manifests, submit-k8s.sh and the README use
    (cronjob.yaml: test_cronjob_runs_duet_daily_once_at_a_time_and_reads_exit_75_as_retry)."""
    image = _image()
    assert f"DUET_IMAGE:-{image}" in (K8S / "submit-k8s.sh").read_text()
    assert f"-t {image} " in (K8S / "Dockerfile").read_text()
    assert image in (INFRA / "README.md").read_text()


# --- Airflow ---------------------------------------------------------------------------------------------

def _dag_tree() -> ast.Module:
    return ast.parse(DAG_FILE.read_text(), filename=str(DAG_FILE))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kwargs(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def test_airflow_dag_runs_duet_daily_for_ds_one_run_at_a_time():
    """Parsed, not imported: Airflow is not installed here, and duet does not depend on it."""
    tree = _dag_tree()
    compile(tree, str(DAG_FILE), "exec")
    [dag] = _calls(tree, "DAG")
    kwargs = _kwargs(dag)
    assert ast.literal_eval(kwargs["max_active_runs"]) == 1
    assert ast.literal_eval(kwargs["catchup"]) is True
    [schedule] = _calls(kwargs["schedule"], "CronTriggerTimetable")   # ds = the day the run fires
    assert _kwargs(schedule)["timezone"].value == "UTC"
    default_args = {ast.literal_eval(k): v for k, v in zip(kwargs["default_args"].keys,
                                                           kwargs["default_args"].values, strict=True)}
    assert ast.literal_eval(default_args["retries"]) >= 1
    assert ast.literal_eval(default_args["depends_on_past"]) is True
    command = _module_constant(DAG_FILE, "DUET_DAILY")
    assert re.match(r"duet daily ", command) and "--date {{ ds }}" in command
    [task] = _calls(tree, "DuetDailySensor")
    task_kwargs = _kwargs(task)
    assert task_kwargs["bash_command"].id == "DUET_DAILY"
    assert ast.literal_eval(task_kwargs["mode"]) == "reschedule"
    assert _module_constant(DAG_FILE, "NOT_LANDED") == 75
    # no Airflow in duet's dependencies
    assert not re.search(r"^apache-airflow", (REPO / "requirements.lock").read_text(), re.M | re.I)


def _load_dag_with_stand_ins(monkeypatch) -> types.ModuleType:
    """The DAG module executed against minimal stand-ins for the Airflow names it imports."""

    class AirflowException(Exception):
        pass

    class AirflowFailException(AirflowException):
        pass

    class PokeReturnValue:
        def __init__(self, is_done, xcom_value=None):
            self.is_done, self.xcom_value = is_done, xcom_value

    class BaseSensorOperator:
        def __init__(self, *, task_id, mode="poke", poke_interval=60, timeout=None, **kwargs):
            self.task_id, self.mode, self.poke_interval, self.timeout = task_id, mode, poke_interval, timeout
            self.log = types.SimpleNamespace(info=lambda *a: None)
            DAG.tasks.append(self)

    class DAG:
        tasks: list = []

        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    sdk = types.ModuleType("airflow.sdk")
    sdk.DAG, sdk.BaseSensorOperator, sdk.PokeReturnValue = DAG, BaseSensorOperator, PokeReturnValue
    sdk.CronTriggerTimetable = lambda cron, timezone: ("cron", cron, timezone)
    exceptions = types.ModuleType("airflow.exceptions")
    exceptions.AirflowException, exceptions.AirflowFailException = AirflowException, AirflowFailException
    monkeypatch.setitem(sys.modules, "airflow", types.ModuleType("airflow"))
    monkeypatch.setitem(sys.modules, "airflow.sdk", sdk)
    monkeypatch.setitem(sys.modules, "airflow.exceptions", exceptions)
    module = types.ModuleType("duet_daily_dag")
    exec(compile(DAG_FILE.read_text(), str(DAG_FILE), "exec"), module.__dict__)
    return module


def test_airflow_task_reads_duet_exit_codes(tmp_path, monkeypatch):
    """0 succeeds with the run record; 75 is "not yet" (poke again, no retry spent); 2 fails without retries;
    1 fails the ordinary way (retried)."""
    module = _load_dag_with_stand_ins(monkeypatch)
    assert module.dag.kwargs["max_active_runs"] == 1
    [task] = [t for t in type(module.dag).tasks if t.task_id == "duet_daily"]
    assert task.mode == "reschedule" and task.poke_interval >= 60
    # a stand-in `duet`: prints a line, then the JSON record, exits with $DUET_EXIT
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "duet", '#!/usr/bin/env bash\necho "running $*"\n'
                'echo \'{"status": "done", "date": "2026-02-01"}\'\nexit "$DUET_EXIT"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # rendered as Airflow would, with the variables' names as their values
    task.bash_command = (module.DUET_DAILY.replace("{{ ds }}", "2026-02-01")
                         .replace("{{ var.value.get('duet_daily_args', '') }}", "--engine spark")
                         .replace("{{ var.value.", "{").replace(" }}", "}"))
    assert "{{" not in task.bash_command
    monkeypatch.setenv("DUET_EXIT", "0")
    done = task.poke({})
    assert done.is_done and done.xcom_value == {"status": "done", "date": "2026-02-01"}
    monkeypatch.setenv("DUET_EXIT", "75")
    assert task.poke({}) is False
    monkeypatch.setenv("DUET_EXIT", "2")
    with pytest.raises(sys.modules["airflow.exceptions"].AirflowFailException):
        task.poke({})
    monkeypatch.setenv("DUET_EXIT", "1")
    with pytest.raises(sys.modules["airflow.exceptions"].AirflowException) as failed:
        task.poke({})
    assert not isinstance(failed.value, sys.modules["airflow.exceptions"].AirflowFailException)


# --- a standalone cluster on loopback -----------------------------------------------------------------------

def _master_state(webui: str) -> dict:
    with urllib.request.urlopen(webui + "/json/", timeout=10) as response:
        return json.load(response)


@pytest.mark.cluster
def test_a_job_runs_on_a_loopback_standalone_cluster(tmp_path):
    """infra/spark/standalone.sh starts a master and two workers (1 core, 1g each) on 127.0.0.1; a duet job
    runs on them through infra/submit.sh with infra/spark/spark-defaults.conf; the master saw it finish,
    both workers ran an executor of it, and the cluster stops cleanly."""
    from deltalake import DeltaTable

    from tests.test_submit import CLICKS

    cluster = tmp_path / "cluster"
    script = str(SPARK_DIR / "standalone.sh")
    # The daemons live for this test only: the JIT's first tier is enough (as SHORT_RUN_ENV for jobs).
    env = {**os.environ, "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1"}
    started = time.monotonic()
    start = subprocess.run([script, "start", "--dir", str(cluster), "--workers", "2", "--cores", "1",
                            "--memory", "1g", "--timeout", "240"],
                           capture_output=True, text=True, timeout=300, env=env)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        url = start.stdout.strip()
        assert re.fullmatch(r"spark://127\.0\.0\.1:\d+", url)
        assert (cluster / "master-url").read_text().strip() == url
        print(f"cluster up in {time.monotonic() - started:.1f} s")
        webui = (cluster / "webui-url").read_text().strip()
        assert _master_state(webui)["aliveworkers"] == 2
        status = subprocess.run([script, "status", "--dir", str(cluster)], capture_output=True, text=True)
        assert status.stdout.strip() == f"{url} (2 alive workers)", status.stderr
        again = subprocess.run([script, "start", "--dir", str(cluster)], capture_output=True, text=True,
                               timeout=60)
        assert again.returncode == 1 and "daemons are running" in again.stderr   # and the first one lives on

        (tmp_path / "clicks.csv").write_text(CLICKS)
        lake = tmp_path / "lake"
        job = subprocess.run(
            [str(INFRA / "submit.sh"), "--master", url,
             "--properties-file", str(SPARK_DIR / "spark-defaults.conf"),
             "--conf", "spark.executor.memory=512m", "--conf", "spark.sql.shuffle.partitions=2",
             "--conf", "spark.default.parallelism=2", "--conf", "spark.databricks.delta.snapshotPartitions=2",
             "--", "ingest", "--lake", str(lake), "--clicks", str(tmp_path / "clicks.csv"),
             # executors living seconds, as the driver (SHORT_RUN_ENV): the JIT's first tier only; duet's own
             # --conf, since core/spark.py sets the executors' JVM options (adding -Duser.timezone=UTC)
             "--conf", "spark.executor.extraJavaOptions=-XX:TieredStopAtLevel=1"],
            capture_output=True, text=True, timeout=900, cwd=REPO,
            env={**SHORT_RUN_ENV, "SPARK_LOCAL_IP": "127.0.0.1"})
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
        assert "read 3 = ingested 2 + already present 0 + quarantined 1" in job.stdout, job.stdout
        rows = DeltaTable(str(lake / "raw/clicks")).to_pyarrow_table().to_pylist()
        assert sorted(r["click_id"] for r in rows) == ["c1", "c2"]

        apps = _master_state(webui)
        finished = [a for a in apps["completedapps"] if a["name"] == "duet-ingest"]
        assert finished and finished[0]["state"] == "FINISHED", (
            "the job did not run on the cluster: the master saw no application (apps: "
            f"{[a['name'] for a in apps['completedapps'] + apps['activeapps']]}); under spark-submit, "
            "core.spark.spark_session must keep the master spark-submit set")
        app_id = finished[0]["id"]
        for worker in ("work-1", "work-2"):
            assert (cluster / worker / app_id).is_dir(), f"{worker} ran no executor of {app_id}"
    finally:
        stop = subprocess.run([script, "stop", "--dir", str(cluster)], capture_output=True, text=True,
                              timeout=60)
        pids = [p.read_text().strip() for p in cluster.glob("*.pid")]
    assert stop.returncode == 0, stop.stderr
    assert not pids, f"pid files left after stop: {pids}"
    assert not (cluster / "master-url").exists()
