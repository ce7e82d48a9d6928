"""MlflowHook: MLflow tracking and the model registry, from one Airflow connection.

Connection type ``mlflow``. The forms users write all work (see :func:`resolve_connection`):

- ``host`` = a tracking URI: ``http://mlflow:5000``, ``https://mlflow.example.com``,
  ``http://alice:secret@mlflow:5000`` (the user-info becomes the credentials and is stripped),
  ``sqlite:///path/mlflow.db``, ``postgresql://...``; or a bare host ``mlflow`` with ``port`` (``http``);
- the Airflow URI forms ``mlflow://127.0.0.1:5613`` (host + port, ``http``), ``mlflow+https://host``
  / ``mlflow+http://host:5000`` (the scheme after ``+``), or extra ``{"scheme": "https"}``;
- ``login``/``password`` = basic auth; extra ``{"token": ...}`` = bearer token; extra ``ui_url`` = the
  MLflow UI (for links), ``artifact_root`` = where new experiments store artifacts.
  Without the connection: SQLite at ``<state dir>/mlflow/mlflow.db``, artifacts in ``<state dir>/mlflow/artifacts``.

Every hook has its own public ``MlflowClient`` (:mod:`airflow_retrain.hooks.mlflow_client`, which says
how credentials reach that client only and why MLflow's request settings are scoped to each call); the
tracking URI is never set process-wide. Every password this hook derives is registered with Airflow's
secrets masker, and nothing with credentials is returned, logged or put into a link. Whole operations are
retried with :mod:`tenacity`, only for transient errors, within a time budget.

MLflow 3 has aliases but no compare-and-set and no alias history; :mod:`airflow_retrain.registry` adds
both (the lease and the promotion history), and this hook offers them as methods: :meth:`MlflowHook.lease`,
:meth:`MlflowHook.promotion_history`, :meth:`MlflowHook.move_alias`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_retrain.config import state_dir
from airflow_retrain.hooks.mlflow_client import (
    EXPECTED_FORMS,
    HttpPolicy,
    MlflowConnectionError,
    MlflowTarget,
    authenticated_uri,
    build_client,
    is_http_uri,
    mlflow_request_settings,
    resolve_connection,
)
from airflow_retrain.registry import history as _history
from airflow_retrain.registry import lease as _lease
from airflow_retrain.registry.errors import (
    AliasMoved,
    ConcurrentWrite,
    LeaseLost,
    LeaseUnavailable,
    RegistryError,
)
from airflow_retrain.registry.lease import Lease, utc_now
from airflow_retrain.registry.tags import HISTORY_TAG, LEASE_TAG, TAG
from airflow_retrain.urls import redact_url

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "EXPECTED_FORMS", "HISTORY_TAG", "LEASE_TAG", "TAG", "AliasMoved", "HttpPolicy", "Lease", "LeaseLost",
    "LeaseUnavailable", "MlflowConnectionError", "MlflowHook", "MlflowTarget", "RegistryError", "code_version",
    "is_transient", "quote_filter_value", "resolve_connection", "utc_now",
]

SUPPORTED_FLAVORS = ("xgboost",)
_T = TypeVar("_T")

# MLflow error codes worth another try; everything else (not found, invalid, already exists, denied) is
# the answer and fails at once.
TRANSIENT_ERROR_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"}
)


def quote_filter_value(value: str) -> str:
    """Quote a value for an MLflow search filter (``name = "o'brien"``)."""
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError(f"cannot search for {value!r}: MLflow filters cannot quote a value with both quote kinds")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another try (server unavailable, timeouts, 5xx/429), not an answer."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        MlflowException = ()  # type: ignore[assignment]  # noqa: N806
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout | ConnectionError | socket.timeout):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code in TRANSIENT_ERROR_CODES
    return False


def code_version(root: str | os.PathLike | None = None) -> str:
    """The git commit of the project (``git rev-parse HEAD`` of ``RETRAIN_HOME``), else ``unknown``."""
    root = Path(root or os.environ.get("RETRAIN_HOME") or Path.cwd())
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)})
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else "unknown"


@contextlib.contextmanager
def quiet_mlflow_logs() -> Iterator[None]:
    """Route MLflow's own chatter (``Created version``, ``already exists``) below the task log's level.

    MLflow prints those with its own handler (to stderr, which the task log shows as errors) at INFO;
    for the duration of a registry call the ``mlflow`` loggers only let warnings through.
    """
    loggers = [logging.getLogger(n) for n in ("mlflow", "mlflow.tracking", "mlflow.store", "mlflow.models")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class MlflowHook(BaseHook):
    """Talk to an MLflow tracking server and registry with a client of its own.

    :param mlflow_conn_id: Airflow connection of type ``mlflow``. While the default ``mlflow_default`` is
        not defined, the embedded SQLite registry under the state dir is used (and logged as such); any
        other connection id that does not exist is an error.
    :param max_attempts: tries per registry operation for transient errors (server down, 5xx, timeouts).
    :param retry_budget_seconds: no new try starts after this many seconds of one operation.
    :param http_policy: per-request HTTP retries and timeout of this hook's client.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(
        self,
        mlflow_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 3,
        retry_budget_seconds: float = 60.0,
        http_policy: HttpPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.max_attempts = max_attempts
        self.retry_budget_seconds = retry_budget_seconds
        self.http_policy = http_policy or HttpPolicy()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Tracking URI or host", "login": "Username"},
            "placeholders": {
                "host": "http://mlflow:5000",
                "extra": '{"ui_url": "https://mlflow.example.com", "artifact_root": "s3://bucket/mlflow"}',
            },
        }

    # -- connection -------------------------------------------------------------------------------
    @cached_property
    def target(self) -> MlflowTarget:
        """Where this hook's connection points (secrets registered with the masker)."""
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            if self.mlflow_conn_id != self.default_conn_name:
                raise
            base = state_dir() / "mlflow"
            base.mkdir(parents=True, exist_ok=True)
            self.log.info("Connection %r not defined: using the embedded MLflow registry in %s", self.mlflow_conn_id, base)
            uri = f"sqlite:///{base / 'mlflow.db'}"
            return MlflowTarget(tracking_uri=uri, client_uri=uri, ui_url=os.environ.get("RETRAIN_MLFLOW_UI_URL"),
                                artifact_root=(base / "artifacts").as_uri())
        extra = conn.extra_dejson
        if conn.password:
            _mask(conn.password)
        target = resolve_connection(self.mlflow_conn_id, conn.conn_type, conn.host, conn.port, conn.login,
                                    conn.password, extra)
        for secret in target.secrets:
            _mask(secret)
        return target

    @property
    def tracking_uri(self) -> str:
        """The tracking URI without credentials (safe to log)."""
        return self.target.tracking_uri

    def get_conn(self) -> MlflowClient:
        return self.client

    @cached_property
    def client(self) -> MlflowClient:
        """This hook's own public ``MlflowClient`` (see :mod:`airflow_retrain.hooks.mlflow_client`)."""
        t = self.target
        return build_client(t.client_uri, username=t.username, password=t.password, token=t.token,
                            policy=self.http_policy)

    def _with_client_settings(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run an MLflow function that is not a client method (``mlflow.artifacts``) with this client's
        credentials and request settings."""
        t = self.target
        if not is_http_uri(t.client_uri):
            return fn(*args, **kwargs)
        with mlflow_request_settings(self.http_policy, t.token):
            return fn(*args, **kwargs)

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this connection replaced by ``***``."""
        from urllib.parse import quote

        for secret in self.target.secrets:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return text

    def call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run one registry operation; retry only transient errors (tenacity), with bounded backoff and no
        new try past ``retry_budget_seconds``; fail with the cause.

        :param what: the operation in words, for the error (``set alias champion of churn``).
        :raises RegistryError: naming ``what`` and the last cause, once the error is not transient or the
            attempts or the budget are spent.
        """
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_before_delay,
            wait_exponential_jitter,
        )

        def quietly() -> _T:
            with quiet_mlflow_logs():
                return fn(*args, **kwargs)

        def log_retry(state) -> None:
            self.log.warning("MLflow %s: %s failed (attempt %d/%d, retrying in %.1f s): %s", self.tracking_uri, what,
                             state.attempt_number, self.max_attempts, state.next_action.sleep,
                             self.scrub(_first_line(state.outcome.exception())))

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.retry_budget_seconds),
            wait=wait_exponential_jitter(initial=1, max=8, jitter=1),
            retry=retry_if_exception(is_transient),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(quietly)
        except ConcurrentWrite:
            raise
        except Exception as exc:  # noqa: BLE001 - classified, re-raised with the cause and no secrets
            attempts = retrying.statistics.get("attempt_number", 1)
            elapsed = retrying.statistics.get("delay_since_first_attempt", 0.0)
            kind = "transient error" if is_transient(exc) else "error"
            tries = f" after {attempts} attempts in {elapsed:.1f} s" if attempts > 1 else ""
            raise RegistryError(
                f"MLflow {self.tracking_uri}: {what} failed{tries} ({kind}): {self.scrub(_first_line(exc))}"
            ) from None

    # -- tracking ---------------------------------------------------------------------------------
    def ensure_experiment(self, name: str) -> str:
        exp = self.call(f"get experiment {name!r}", self.client.get_experiment_by_name, name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if root := self.target.artifact_root:
            location = f"{root.rstrip('/')}/{name.replace('/', '_')}"
        try:
            return self.call(f"create experiment {name!r}", self.client.create_experiment, name,
                             artifact_location=location)
        except RegistryError:
            exp = self.call(f"get experiment {name!r}", self.client.get_experiment_by_name, name)
            if exp is None:  # not a race with another creator: the creation itself failed
                raise
            return exp.experiment_id

    def log_candidate(
        self,
        *,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        model_dir: str | os.PathLike,
        flavor: str,
        model_name: str,
        signature: Any = None,
        sample: Any = None,
        version_tags: dict[str, str],
        input_example: Any = None,
        artifacts: dict[str, str | os.PathLike] | None = None,
    ) -> dict[str, Any]:
        """Log one candidate (params, metrics, tags in batches; the model with ``signature``) and register it.

        The model is saved locally with the flavor's ``save_model`` and uploaded with this hook's client
        (no fluent ``mlflow.start_run``: that uses the process-wide tracking URI); the version's source is
        the run's ``model`` artifact folder and its ``run_id`` is the run, so lineage holds.
        """
        import mlflow
        from mlflow.entities import Metric, Param

        if flavor not in SUPPORTED_FLAVORS:
            raise ValueError(f"unsupported model flavor {flavor!r}; supported: {', '.join(SUPPORTED_FLAVORS)}")
        if signature is None:
            if sample is None:
                raise ValueError("log_candidate needs a signature (or a sample to infer one from)")
            from mlflow.models import infer_signature

            signature = infer_signature(sample)
        client = self.client
        exp_id = self.ensure_experiment(experiment)
        run = self.call(f"create run in {experiment!r}", client.create_run, exp_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            batch_params = [Param(k, str(v)[:6000]) for k, v in params.items()]
            batch_metrics = [
                Metric(k, float(v), now, 0) for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
            ]
            for i in range(0, max(len(batch_params), len(batch_metrics), 1), 100):  # MLflow: 100 params/batch
                self.call(f"log params/metrics of run {run_id}", client.log_batch, run_id,
                          metrics=batch_metrics[i:i + 100], params=batch_params[i:i + 100], tags=[])
            for name, path in (artifacts or {}).items():
                if Path(path).exists():
                    self.call(f"log artifact {name}", client.log_artifact, run_id, str(path), artifact_path=name)
            with tempfile.TemporaryDirectory(prefix="retrain-model-") as tmp:
                local = Path(tmp) / "model"
                model = _load_native_model(flavor, Path(model_dir))
                with quiet_mlflow_logs():
                    mlflow.xgboost.save_model(
                        model, str(local), signature=signature, input_example=input_example, model_format="json",
                        # The flavor's own requirements (pinned to what trained it): MLflow's inference of
                        # requirements re-imports the model in a subprocess and costs seconds per candidate.
                        pip_requirements=mlflow.xgboost.get_default_pip_requirements(),
                    )
                self.call(f"upload model of run {run_id}", client.log_artifacts, run_id, str(local), "model")
            source = f"{run.info.artifact_uri.rstrip('/')}/model"
            self.ensure_registered_model(model_name)
            version = self.create_version_once(model_name, source, run_id, version_tags)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, status="FAILED")
            raise
        self.call(f"finish run {run_id}", client.set_terminated, run_id, status="FINISHED")
        return {
            "run_id": run_id,
            "experiment_id": exp_id,
            "model_uri": f"models:/{model_name}/{version.version}",
            "source": source,
            "model_name": model_name,
            "version": str(version.version),
            "run_url": self.run_url(exp_id, run_id),
            "version_url": self.version_url(model_name, version.version),
        }

    def ensure_registered_model(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        def create() -> None:
            try:
                self.client.create_registered_model(model_name)
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

        if self.find_registered_model(model_name) is None:
            self.call(f"create registered model {model_name!r}", create)

    def find_registered_model(self, model_name: str):
        from mlflow.exceptions import MlflowException

        def get():
            try:
                return self.client.get_registered_model(model_name)
            except MlflowException as e:
                if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

        return self.call(f"get registered model {model_name!r}", get)

    def find_version_by_tag(self, model_name: str, key: str, value: str) -> ModelVersion | None:
        """The version of ``model_name`` whose tag ``key`` is ``value`` (filters quoted: ``o'brien`` works)."""
        flt = f"name = {quote_filter_value(model_name)} and tags.`{key}` = {quote_filter_value(value)}"
        versions = self.call(f"search versions of {model_name!r}", self.client.search_model_versions, flt)
        matching = [v for v in versions if v.name == model_name and (v.tags or {}).get(key) == value]
        return min(matching, key=lambda v: int(v.version)) if matching else None

    def create_version_once(self, model_name: str, source: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """Create a model version of ``run_id`` exactly once.

        A transient failure may have created the version on the server before the answer was lost (MLflow's
        HTTP layer retries nothing here, see :class:`HttpPolicy`): every try first looks for the version of
        *this* candidate's MLflow run and returns it if it exists. A cleared DAG run that trained again logs
        a new run under the same run key and gets a new version.
        """
        flt = f"name = {quote_filter_value(model_name)} and run_id = {quote_filter_value(run_id)}"

        def find_or_create() -> ModelVersion:
            found = [v for v in self.client.search_model_versions(flt) if v.name == model_name and v.run_id == run_id]
            if found:
                return min(found, key=lambda v: int(v.version))
            return self.client.create_model_version(model_name, source, run_id=run_id, tags=tags)

        return self.call(f"create version of {model_name!r} (run key {tags.get(f'{TAG}.run_key')})", find_or_create)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.call(f"get run {run_id}", self.client.get_run, run_id).data.metrics)

    def log_dict(self, run_id: str, data: dict, artifact_file: str) -> None:
        self.call(f"log {artifact_file} to run {run_id}", self.client.log_dict, run_id, data, artifact_file)

    def load_dict(self, run_id: str, artifact_file: str) -> dict[str, Any] | None:
        """A JSON artifact of a run, or ``None`` when the run has no such file."""
        folder, _, name = artifact_file.rpartition("/")
        listed = self.call(f"list artifacts of run {run_id}", self.client.list_artifacts, run_id, folder or None)
        if not any(f.path == artifact_file for f in listed):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = self.call(f"download {artifact_file}", self.client.download_artifacts, run_id, artifact_file, tmp)
            return json.loads(Path(path).read_text())

    def download_model(self, model_name: str, version: str | int, dst: str | os.PathLike) -> str:
        """Download a version's model files with this hook's client; load them with ``mlflow.pyfunc.load_model``."""
        Path(dst).mkdir(parents=True, exist_ok=True)  # the client downloads into an existing folder only
        mv = self.get_version(model_name, version)
        source = mv.source.rstrip("/")
        run_prefix = self.call(f"get run {mv.run_id}", self.client.get_run, mv.run_id).info.artifact_uri.rstrip("/")
        if not source.startswith(run_prefix + "/"):
            # The version's files live outside its run (registered from elsewhere): fetch the source itself,
            # so a version whose files are gone fails here instead of loading its run's model.
            import mlflow.artifacts

            t = self.target
            return self.call(f"download model {model_name} v{version} from {source}", self._with_client_settings,
                             mlflow.artifacts.download_artifacts, artifact_uri=source, dst_path=str(dst),
                             tracking_uri=authenticated_uri(t.client_uri, t.username, t.password))
        return self.call(f"download model {model_name} v{version}", self.client.download_artifacts, mv.run_id,
                         source[len(run_prefix) + 1:], str(dst))

    def set_run_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self.call(f"tag run {run_id}", self.client.log_batch, run_id, metrics=[], params=[], tags=batch)

    # -- registry ---------------------------------------------------------------------------------
    def get_version(self, model_name: str, version: str | int) -> ModelVersion:
        return self.call(f"get {model_name} v{version}", self.client.get_model_version, model_name, str(version))

    def get_version_by_alias(self, model_name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        def get():
            try:
                return self.client.get_model_version_by_alias(model_name, alias)
            except MlflowException as e:
                if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                    return None
                raise

        return self.call(f"get {model_name}@{alias}", get)

    def set_version_tags(self, model_name: str, version: str | int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.call(f"tag {model_name} v{version} {key}", self.client.set_model_version_tag, model_name,
                      str(version), key, str(value))

    def set_alias(self, model_name: str, alias: str, version: str | int) -> None:
        self.call(f"set {model_name}@{alias} -> v{version}", self.client.set_registered_model_alias, model_name,
                  alias, str(version))

    def model_tags(self, model_name: str) -> dict[str, str]:
        rm = self.find_registered_model(model_name)
        return dict(rm.tags or {}) if rm is not None else {}

    # -- the promotion protocol (airflow_retrain.registry), as methods of the hook -------------------
    def promotion_history(self, model_name: str) -> list[dict[str, Any]]:
        """Every recorded alias move and promotion decision of ``model_name``, oldest first (from MLflow alone)."""
        return _history.read(self, model_name)

    def append_history(self, lease: Lease, entry: dict[str, Any]) -> dict[str, Any]:
        """Append ``entry`` to the history under ``lease`` (see :func:`airflow_retrain.registry.history.append`)."""
        return _history.append(self, lease, entry)

    def move_alias(self, lease: Lease, alias: str, version: str, entry: dict[str, Any],
                   expected_from: str | None | object = ...) -> dict[str, Any]:
        """Move ``alias`` to ``version`` and record it (see :func:`airflow_retrain.registry.history.move_alias`)."""
        return _history.move_alias(self, lease, alias, version, entry, expected_from)

    def read_lease(self, model_name: str) -> dict[str, Any] | None:
        return _lease.read(self, model_name)

    @contextlib.contextmanager
    def lease(
        self,
        model_name: str,
        holder: str,
        *,
        ttl_seconds: float = 300.0,
        wait_seconds: float = 120.0,
        settle_seconds: float = 0.5,
        poll_seconds: float = 0.25,
    ) -> Iterator[Lease]:
        """Hold ``model_name``'s promotion lease for the ``with`` block; release it in ``finally``.

        :param holder: who holds it (``dag_id/run_id/task``), recorded in the lease and the history.
        :param ttl_seconds: after this a lease counts as abandoned and another run takes it over.
        :param wait_seconds: how long to wait for another holder before failing with :class:`LeaseUnavailable`.
        :param settle_seconds: the pause between writing the lease and reading it back; longer than any
            other contender's read-to-write gap, so a lost race shows on the re-read.
        :raises LeaseUnavailable: another holder kept it longer than ``wait_seconds``.
        """
        held = self.acquire_lease(model_name, holder, ttl_seconds=ttl_seconds, wait_seconds=wait_seconds,
                                  settle_seconds=settle_seconds, poll_seconds=poll_seconds)
        try:
            yield held
        finally:
            self.release_lease(held)

    def acquire_lease(self, model_name: str, holder: str, *, ttl_seconds: float = 300.0, wait_seconds: float = 120.0,
                      settle_seconds: float = 0.5, poll_seconds: float = 0.25) -> Lease:
        return _lease.acquire(self, model_name, holder, ttl_seconds=ttl_seconds, wait_seconds=wait_seconds,
                              settle_seconds=settle_seconds, poll_seconds=poll_seconds)

    def release_lease(self, lease: Lease) -> None:
        _lease.release(self, lease)

    # -- links ------------------------------------------------------------------------------------
    @property
    def ui_base_url(self) -> str | None:
        """The MLflow UI's URL for links (extra ``ui_url``), without user-info or token parameters."""
        return redact_url(self.target.ui_url)

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        base = self.ui_base_url
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if base else None

    def version_url(self, model_name: str, version: str | int) -> str | None:
        from urllib.parse import quote

        base = self.ui_base_url
        return f"{base.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{version}" if base else None


def _mask(secret: str) -> None:
    from urllib.parse import quote

    from airflow.sdk.log import mask_secret

    mask_secret(secret)
    if quote(secret, safe="") != secret:
        mask_secret(quote(secret, safe=""))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:500]}"


def _load_native_model(flavor: str, model_dir: Path):
    if flavor == "xgboost":
        import xgboost

        path = model_dir / "model.json"
        if not path.exists():
            raise FileNotFoundError(f"training output has no {path.name} in {model_dir}")
        model = xgboost.XGBClassifier()
        model.load_model(str(path))
        return model
    raise ValueError(f"unsupported model flavor {flavor!r}")
