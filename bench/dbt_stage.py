"""Benchmark the dbt stage against plain ``dbt build`` and astronomer-cosmos 1.15, side by side in one run.

    make bench-dbt ARGS="--project-dir .local/bench-dbt/synthetic_100"
    .venv-bench/bin/python bench/dbt_stage.py --project-dir DIR [--profiles-dir DIR] [--select ...] [--json FILE]

Measures, on the same project and selection:

- **render**: building the Airflow tasks from the manifest, ours (:func:`airflow_retrain.dbt.render.build_dbt_stage`,
  from the cached index) vs Cosmos ``DbtDag`` with ``LoadMode.DBT_MANIFEST`` (imports excluded for both;
  each in a fresh interpreter, alternated, median of ``--render-repeats``);
- **build**: wall time of a plain ``dbt build`` (warm: partial parsing on, second of two runs) vs our task
  group, Cosmos ``ExecutionMode.WATCHER`` (one producer ``dbt build``, deferrable per-model sensors) and
  Cosmos ``ExecutionMode.LOCAL`` as a real Airflow run executes them: ``airflow standalone`` (scheduler,
  LocalExecutor, triggerer, dag-processor) on ``--port``, runs triggered through the REST API, rounds
  alternating plain dbt / ours / Cosmos WATCHER (``--per-node`` adds our group forced to one task per
  node, the design before the per-folder switch); the group's wall time is first task start to last task
  end, read back from the API. The load average is recorded with each round.

Cosmos is a benchmark-only dependency: it lives in ``.venv-bench`` (``make bench-dbt`` creates it), never in
the runtime lock. Its tasks share one pool slot: DuckDB allows one writing process at a time.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_supervisor():
    """The package's job supervisor, by path (standard library only; no Airflow import)."""
    path = ROOT / "plugins" / "airflow_retrain" / "training" / "supervisor.py"
    spec = importlib.util.spec_from_file_location("_retrain_supervisor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


supervisor = _load_supervisor()


class ProcessGroup:
    """A long-running command (``airflow standalone``) that never outlives this script.

    It starts in its own session with a token in its environment (:mod:`supervisor`); :meth:`stop` sends
    the group SIGINT (standalone's clean stop), waits ``grace_seconds``, then ends everything carrying the
    token or descending from it -- children that started sessions of their own too. It runs on normal
    exit (``atexit``), on SIGTERM (``timeout``) and on SIGINT (Ctrl-C).
    """

    def __init__(self, argv: list[str], env: dict[str, str], stdout, grace_seconds: float = 30.0) -> None:
        self.token = supervisor.new_token()
        self.grace_seconds = grace_seconds
        # The token alone is not enough: Airflow's processes call setproctitle, which overwrites the memory
        # /proc/<pid>/environ reads, so a LocalExecutor worker orphaned by its scheduler carries no visible
        # token. As the subreaper, this script inherits such orphans and finds them among its descendants.
        supervisor.become_subreaper()
        self.proc: subprocess.Popen | None = subprocess.Popen(
            argv, env={**env, supervisor.JOB_TOKEN_VAR: self.token}, stdout=stdout, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        atexit.register(self.stop)
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else 0

    def _on_signal(self, signum, _frame) -> None:
        self.stop()
        raise SystemExit(128 + signum)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        atexit.unregister(self.stop)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=self.grace_seconds)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        supervisor.kill_job(  # the group, and whatever was orphaned onto this subreaper (never itself)
            supervisor.token_marker(self.token), roots=[proc.pid, os.getpid()], include_roots=True, grace_seconds=10
        )
        proc.poll()


OURS_RENDER = """
import sys, time
from airflow.sdk import DAG, Asset, TaskGroup
import airflow_retrain.dbt.render as render
import airflow_retrain.operators.dbt, airflow_retrain.spec  # what a DAG file imports anyway
select = {select!r} or None
t = time.perf_counter()
with DAG("render_ours", schedule=None) as dag:
    producer, group, plan = render.build_dbt_stage(project_dir={project!r}, select=select, pipeline="bench",
                                                   warehouse_conn_id=None, profiles_dir={profiles!r})
elapsed = time.perf_counter() - t
print("RESULT", elapsed, len(dag.task_dict))
"""

COSMOS_RENDER = """
import sys, time
from datetime import datetime
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import LoadMode
select = {select!r}
t = time.perf_counter()
dag = DbtDag(
    dag_id="render_cosmos", schedule=None, start_date=datetime(2026, 1, 1),
    project_config=ProjectConfig(dbt_project_path={project!r}, manifest_path={manifest!r}),
    profile_config=ProfileConfig(profile_name={profile!r}, target_name={target!r},
                                 profiles_yml_filepath={profiles!r} + "/profiles.yml"),
    render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, select=select),
    execution_config=ExecutionConfig(dbt_executable_path={dbt!r}),
)
elapsed = time.perf_counter() - t
print("RESULT", elapsed, len(dag.task_dict))
"""

OURS_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_retrain.dbt.render import MAX_NODE_TASKS, build_dbt_stage

with DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1) as dag:
    build_dbt_stage(project_dir={project!r}, select={select!r} or None, pipeline="bench", warehouse_conn_id=None,
                    profiles_dir={profiles!r}, max_node_tasks={max_node_tasks})
"""

# Cosmos as a deployment would run it: ``ExecutionMode.WATCHER`` (one dbt build whose nodes report to
# their tasks) or ``ExecutionMode.LOCAL`` (a dbt invocation per node, in the ``dbt_bench`` pool).
COSMOS_DAG = """
# an airflow DAG file (the words let the dag-processor's safe mode pick it up)
from datetime import datetime
from cosmos import DbtDag, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, LoadMode

dag = DbtDag(
    dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
    project_config=ProjectConfig(dbt_project_path={project!r}, manifest_path={manifest!r}),
    profile_config=ProfileConfig(profile_name={profile!r}, target_name={target!r},
                                 profiles_yml_filepath={profiles!r} + "/profiles.yml"),
    render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, select={select!r}),
    execution_config=ExecutionConfig(execution_mode=ExecutionMode.{mode}, dbt_executable_path={dbt!r}),
    operator_args={operator_args!r},
)
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RETRAIN_HOME": str(ROOT),
            "RETRAIN_STATE_DIR": str(home / "state"),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__TRIGGERER__CAPACITY": "5000",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _dbt_exe() -> str:
    return str(Path(sys.executable).with_name("dbt"))


def _profile_and_target(project: Path, profiles: Path) -> tuple[str, str]:
    import yaml

    profile = yaml.safe_load((project / "dbt_project.yml").read_text())["profile"]
    target = yaml.safe_load((profiles / "profiles.yml").read_text())[profile].get("target", "dev")
    return profile, str(target)


def render_times(args, env, manifest: Path, profile: str, target: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ours": [], "cosmos": []}
    fmt = {
        "project": str(args.project_dir), "profiles": str(args.profiles_dir), "select": args.select or None,
        "manifest": str(manifest), "profile": profile, "target": target, "dbt": _dbt_exe(),
    }  # fmt: skip
    for _ in range(args.render_repeats):
        for name, template in (("ours", OURS_RENDER), ("cosmos", COSMOS_RENDER)):
            code = template.format(**{**fmt, "select": fmt["select"] or ([] if name == "cosmos" else None)})
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
            if not line:
                raise RuntimeError(f"{name} render failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            _, seconds, tasks = line.split()
            out[name].append(float(seconds))
            print(f"  render {name:6s} {float(seconds):7.3f} s ({tasks} tasks)", flush=True)
    return out


def plain_build(args, env) -> float:
    target_path = args.home / "plain-target"
    argv = [_dbt_exe(), "build", "--project-dir", str(args.project_dir), "--profiles-dir", str(args.profiles_dir),
            "--target-path", str(target_path)]  # fmt: skip
    if args.select:
        argv += ["--select", *args.select]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=args.project_dir, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"plain dbt build failed:\n{proc.stdout[-3000:]}")
    print(f"  plain dbt build {elapsed:.2f} s", flush=True)
    return elapsed


class Standalone:
    """``airflow standalone`` on a port, driven through the REST API."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.port = home, dict(env), port
        self.env["AIRFLOW__API__PORT"] = str(port)
        self.env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{port}"
        self.proc: ProcessGroup | None = None
        self.token = ""

    def __enter__(self) -> Standalone:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True, capture_output=True
        )
        subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "set", "dbt_bench", "1", "duckdb: one writer"],
            env=self.env, check=True, capture_output=True,
        )  # fmt: skip
        log = open(self.home / "standalone.log", "w")  # noqa: SIM115
        self.proc = ProcessGroup(
            [str(Path(sys.executable).with_name("airflow")), "standalone"], self.env, log
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/version", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                time.sleep(2)
        else:
            raise RuntimeError(
                f"airflow standalone did not answer on port {self.port}; see {self.home}/standalone.log"
            )
        pw_file = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        for _ in range(60):
            if pw_file.exists():
                break
            time.sleep(1)
        password = json.loads(pw_file.read_text())["admin"]
        self.token = self._call(
            "POST", "/auth/token", {"username": "admin", "password": password}, auth=False
        )["access_token"]
        return self

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.stop()  # standalone and its eleven children, whatever sessions they run in

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if auth else {}),
            },
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")

    def wait_for_dag(self, dag_id: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._call("GET", f"/api/v2/dags/{dag_id}")
                self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return
            except urllib.error.HTTPError:
                time.sleep(2)
        raise RuntimeError(f"DAG {dag_id} never appeared; see {self.home}/standalone.log")

    def run(self, dag_id: str, timeout: float) -> dict:
        run = self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + timeout
        state = run["state"]
        while time.monotonic() < deadline:
            state = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                break
            time.sleep(2)
        tis = []
        offset = 0
        while True:
            page = self._call(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={offset}"
            )
            tis += page["task_instances"]
            offset += 100
            if offset >= page["total_entries"]:
                break
        starts = [_ts(t["start_date"]) for t in tis if t.get("start_date")]
        ends = [_ts(t["end_date"]) for t in tis if t.get("end_date")]
        states: dict[str, int] = {}
        for t in tis:
            states[t["state"] or "none"] = states.get(t["state"] or "none", 0) + 1
        producer = next((t for t in tis if t["task_id"] in ("dbt_build", "dbt_producer_watcher")), None)
        return {
            "state": state,
            "wall_s": (max(ends) - min(starts)) if starts and ends else float("nan"),
            "producer_s": (_ts(producer["end_date"]) - _ts(producer["start_date"]))
            if producer and producer.get("end_date")
            else None,
            "tasks": len(tis),
            "states": states,
            "load_avg_1m": os.getloadavg()[0],
        }


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--profiles-dir", type=Path)
    parser.add_argument("--select", nargs="*")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--home", type=Path, help="bench state (Airflow home, caches); default .local/bench-dbt/<project>-home"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("RETRAIN_BENCH_AIRFLOW_PORT", "8097")))
    parser.add_argument("--render-repeats", type=int, default=3)
    parser.add_argument(
        "--ours-runs",
        type=int,
        default=3,
        help="rounds of plain dbt build + our Airflow run; the median of all but the first is reported",
    )
    parser.add_argument(
        "--no-cosmos-build", action="store_true", help="skip the Cosmos LOCAL run (hours at 1,000 models)"
    )
    parser.add_argument("--no-cosmos-watcher", action="store_true", help="skip the Cosmos WATCHER runs")
    parser.add_argument(
        "--per-node", action="store_true", help="also run our group forced to one task per node"
    )
    parser.add_argument("--run-timeout", type=float, default=3600, help="seconds one Airflow run may take")
    parser.add_argument("--no-build", action="store_true", help="render times only")
    args = parser.parse_args()
    args.project_dir = args.project_dir.resolve()
    args.profiles_dir = (args.profiles_dir or args.project_dir).resolve()
    args.home = (args.home or ROOT / ".local" / "bench-dbt" / f"{args.project_dir.name}-home").resolve()
    shutil.rmtree(args.home / "airflow", ignore_errors=True)
    (args.home / "dags").mkdir(parents=True, exist_ok=True)
    env = _env(args.home)
    if importlib.util.find_spec("cosmos") is None:
        sys.exit("astronomer-cosmos is not installed here: run `make bench-dbt` (creates .venv-bench)")

    print(f"project {args.project_dir} select {args.select or '(all)'}", flush=True)
    if (args.project_dir / "packages.yml").is_file() and not (args.project_dir / "dbt_packages").is_dir():
        subprocess.run(
            [_dbt_exe(), "deps", "--profiles-dir", str(args.profiles_dir)],
            cwd=args.project_dir,
            env=env,
            check=True,
            capture_output=True,
        )
    out = subprocess.run(
        [sys.executable, "-m", "airflow_retrain.dbt", "manifest", "--project-dir", str(args.project_dir),
         "--profiles-dir", str(args.profiles_dir)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"dbt parse failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    print("  " + out.stdout.strip().splitlines()[-1], flush=True)
    # dbt resolves the selection (`dbt ls`, cached per manifest and selection) as a DAG's first dbt_build does;
    # without it a DAG renders dbt_build alone and "render" would time that fallback, not the node group.
    out = subprocess.run(
        [sys.executable, "-m", "airflow_retrain.dbt", "select", "--project-dir", str(args.project_dir),
         "--profiles-dir", str(args.profiles_dir), *(["--select", *args.select] if args.select else [])],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"dbt ls failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    print("  selection: " + out.stdout.strip().splitlines()[-1], flush=True)
    sys.path.insert(0, str(ROOT / "plugins"))
    os.environ.update({k: env[k] for k in ("RETRAIN_STATE_DIR", "RETRAIN_HOME")})
    from airflow_retrain.dbt.manifest import cache_dir, project_fingerprint

    manifest = cache_dir(args.project_dir, project_fingerprint(args.project_dir)) / "manifest.json"
    profile, target = _profile_and_target(args.project_dir, args.profiles_dir)

    renders = render_times(args, env, manifest, profile, target)
    result: dict[str, float | None] = {
        "render_s_ours": statistics.median(renders["ours"]),
        "render_s_cosmos": statistics.median(renders["cosmos"]),
        "build_s_ours": None,
        "build_s_plain_dbt": None,
        "build_s_cosmos": None,
        "build_s_cosmos_watcher": None,
        "build_s_ours_per_node": None,
    }
    details: dict[str, dict] = {}
    if not args.no_build:
        fmt = {"project": str(args.project_dir), "profiles": str(args.profiles_dir), "select": args.select or None,
               "manifest": str(manifest), "profile": profile, "target": target, "dbt": _dbt_exe()}  # fmt: skip
        (args.home / "dags" / "bench_ours.py").write_text(
            OURS_DAG.format(**fmt, dag_id="bench_ours", max_node_tasks="MAX_NODE_TASKS")
        )
        variants = [("ours", "bench_ours")]
        if args.per_node:
            (args.home / "dags" / "bench_ours_per_node.py").write_text(
                OURS_DAG.format(**fmt, dag_id="bench_ours_per_node", max_node_tasks=10**9)
            )
            variants.append(("ours_per_node", "bench_ours_per_node"))
        if not args.no_cosmos_watcher:
            (args.home / "dags" / "bench_cosmos_watcher.py").write_text(
                COSMOS_DAG.format(**{**fmt, "select": args.select or []}, dag_id="bench_cosmos_watcher", mode="WATCHER",
                                  operator_args={"install_deps": False})
            )
            variants.append(("cosmos_watcher", "bench_cosmos_watcher"))
        if not args.no_cosmos_build:
            (args.home / "dags" / "bench_cosmos.py").write_text(
                COSMOS_DAG.format(**{**fmt, "select": args.select or []}, dag_id="bench_cosmos", mode="LOCAL",
                                  operator_args={"pool": "dbt_bench", "install_deps": False})
            )
        with Standalone(args.home, env, args.port) as airflow:
            for _, dag_id in variants:
                airflow.wait_for_dag(dag_id)
            # Alternate plain dbt and each Airflow variant while the same Airflow components run beside all;
            # the first round warms partial parsing for each and is not reported (unless it is the only one).
            walls: dict[str, list[float]] = {"plain": []}
            for i in range(args.ours_runs):
                walls["plain"].append(plain_build(args, env))
                for name, dag_id in variants:
                    details[f"{name}_{i}"] = run = airflow.run(dag_id, timeout=args.run_timeout)
                    print(f"  airflow run {name} #{i + 1}: {run}", flush=True)
                    if run["state"] != "success":
                        raise RuntimeError(f"{dag_id} run failed: {run}")
                    walls.setdefault(name, []).append(run["wall_s"])
            warm = slice(1, None) if args.ours_runs > 1 else slice(None)
            result["build_s_plain_dbt"] = statistics.median(walls["plain"][warm])
            result["build_s_ours"] = statistics.median(walls["ours"][warm])
            if "ours_per_node" in walls:
                result["build_s_ours_per_node"] = statistics.median(walls["ours_per_node"][warm])
            if "cosmos_watcher" in walls:
                result["build_s_cosmos_watcher"] = statistics.median(walls["cosmos_watcher"][warm])
            if not args.no_cosmos_build:
                airflow.wait_for_dag("bench_cosmos")
                details["cosmos"] = run = airflow.run("bench_cosmos", timeout=args.run_timeout)
                print(f"  airflow run cosmos: {run}", flush=True)
                result["build_s_cosmos"] = run["wall_s"]
    _print_table(args, result)
    if args.json:
        args.json.write_text(
            json.dumps({**result, "details": details, "project": str(args.project_dir)}, indent=2)
        )


def _print_table(args, r: dict) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:8.3f}"

    def ratio(a, b):
        return "-" if a is None or b is None else f"{a / b:6.3f}x"

    print()
    print(f"dbt stage benchmark: {args.project_dir.name} (select {' '.join(args.select or []) or 'all'})")
    print(f"{'measure':42s} {'seconds':>9s} {'ratio':>9s}")
    print(
        f"{'render, ours (cached index)':42s} {fmt(r['render_s_ours'])} {ratio(r['render_s_ours'], r['render_s_cosmos']):>9s}  of Cosmos (target <= 0.100x)"
    )
    print(f"{'render, Cosmos DBT_MANIFEST':42s} {fmt(r['render_s_cosmos'])} {'1.000x':>9s}")
    print(f"{'build, plain dbt build (warm)':42s} {fmt(r['build_s_plain_dbt'])} {'1.000x':>9s}")
    print(
        f"{'build, ours (Airflow: producer + nodes)':42s} {fmt(r['build_s_ours'])} {ratio(r['build_s_ours'], r['build_s_plain_dbt']):>9s}  of plain (target <= 1.200x)"
    )
    print(
        f"{'build, ours one task per node':42s} {fmt(r['build_s_ours_per_node'])} {ratio(r['build_s_ours_per_node'], r['build_s_plain_dbt']):>9s}  of plain"
    )
    print(
        f"{'build, Cosmos WATCHER (Airflow)':42s} {fmt(r['build_s_cosmos_watcher'])} {ratio(r['build_s_cosmos_watcher'], r['build_s_plain_dbt']):>9s}  of plain; ours {ratio(r['build_s_ours'], r['build_s_cosmos_watcher'])} of it"
    )
    print(
        f"{'build, Cosmos LOCAL (Airflow)':42s} {fmt(r['build_s_cosmos'])} {ratio(r['build_s_cosmos'], r['build_s_plain_dbt']):>9s}  of plain"
    )


if __name__ == "__main__":
    main()
