"""TrainModelOperator: a script that saves no model fails ``train``; a chatty script's log is capped in the task log."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException
from helpers import stop_running_jobs

from airflow_retrain.operators.training import CappedLogCopy, EmptyModelOutput, TrainModelOperator
from airflow_retrain.runs import RunIdentity
from airflow_retrain.training.local import LocalTrainingBackend

DAG_ID = "unit_train_outputs"

# Exits 0 with metrics but without saving a model to SM_MODEL_DIR.
NO_MODEL = """
import json, os, pathlib
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json").write_text(json.dumps({"metrics": {"auc": 0.9}}))
print("trained, forgot to save", flush=True)
"""

# Prints LINES numbered lines (about 60 bytes each), then saves a model.
CHATTY = """
import json, os, pathlib, sys
for i in range(int(os.environ["SM_HP_LINES"])):
    sys.stdout.write(f"progress line {i:07d} " + "#" * 40 + "\\n")
print("final: auc 0.9", flush=True)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.json").write_text("{}")
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json").write_text(json.dumps({"metrics": {"auc": 0.9}}))
"""


@pytest.fixture
def jobs_dir(tmp_path) -> Path:
    path = tmp_path / "jobs"
    yield path
    stop_running_jobs(LocalTrainingBackend(jobs_dir=path))


def make_op(tmp_path, jobs_dir, source: str, **kwargs) -> TrainModelOperator:
    entry = tmp_path / "train.py"
    entry.write_text(textwrap.dedent(source))
    channel = tmp_path / "data"
    channel.mkdir(exist_ok=True)
    return TrainModelOperator(
        task_id="train", pipeline="churn", entry_point=str(entry), channels={"train": str(channel)},
        backend_config={"jobs_dir": str(jobs_dir)}, poll_interval=0.1, artifact_root=(tmp_path / "store").as_uri(),
        **kwargs,
    )  # fmt: skip


def test_a_script_that_saves_no_model_fails_train_naming_the_folder_and_script(tmp_path, jobs_dir, make_context):
    op = make_op(tmp_path, jobs_dir, NO_MODEL)
    run_id = f"manual__{tmp_path.name}"
    with pytest.raises(EmptyModelOutput) as failed:
        op.execute(make_context(DAG_ID, run_id))
    message = str(failed.value)
    job_name = RunIdentity("churn", DAG_ID, run_id).job_name(1)
    assert isinstance(failed.value, AirflowFailException)  # no retries: the script would do it again
    assert f"training job {job_name} completed, but its script {tmp_path / 'train.py'} wrote no model" in message
    assert f"/training/{job_name}/model" in message and "is empty" in message and "SM_MODEL_DIR" in message
    assert str(jobs_dir / job_name / "model") in message
    # Nothing marks the outputs complete: a later attempt does not reuse them.
    assert not list((tmp_path / "store").rglob("outputs.json"))


def test_a_retry_after_an_empty_model_trains_again(tmp_path, jobs_dir, make_context):
    run_id = f"manual__{tmp_path.name}"
    with pytest.raises(EmptyModelOutput):
        make_op(tmp_path, jobs_dir, NO_MODEL).execute(make_context(DAG_ID, run_id))
    fixed = make_op(tmp_path, jobs_dir, CHATTY, hyperparameters={"lines": 1})  # the script was fixed
    result = fixed.execute(make_context(DAG_ID, run_id, try_number=2))
    assert result["job_name"] == RunIdentity("churn", DAG_ID, run_id).job_name(2)
    assert json.loads((Path(result["model_uri"].removeprefix("file://")) / "model.json").read_text()) == {}


def test_task_log_copies_a_capped_head_and_tail_and_names_the_full_log(tmp_path, jobs_dir, make_context, caplog, capsys):
    lines = 20000  # about 1.2 MB of output
    op = make_op(tmp_path, jobs_dir, CHATTY, hyperparameters={"lines": lines}, max_task_log_bytes=20_000)
    run_id = f"manual__{tmp_path.name}"
    result = op.execute(make_context(DAG_ID, run_id))
    logged = caplog.text + capsys.readouterr().out
    full_log = jobs_dir / result["job_name"] / "log.txt"
    copied = [ln for ln in logged.splitlines() if "progress line" in ln]
    assert 150 < len(copied) < 400  # about 20 kB of 60-byte lines, not 20,000 lines
    assert "progress line 0000000" in logged and f"progress line {lines - 1:07d}" in logged  # head and tail
    assert "final: auc 0.9" in logged  # the last lines, which usually explain a failure
    (omitted,) = [ln for ln in logged.splitlines() if "of the job's log omitted from this task log" in ln]
    assert f"full log: {full_log}" in omitted
    count = int(re.search(r"\[(\d+) lines \(", omitted).group(1))
    assert len(copied) + count == lines  # every line is either copied or counted
    assert sum(1 for ln in full_log.read_text().splitlines() if "progress line" in ln) == lines


def test_capped_copy_counts_what_it_leaves_out():
    out: list[str] = []
    copy = CappedLogCopy(out.append, max_bytes=100)
    copy.feed("".join(f"{i:09d}\n" for i in range(50)), where="/state/jobs/j/log.txt")  # 10 bytes a line
    copy.finish("/state/jobs/j/log.txt")
    data = [ln for ln in out if not ln.startswith("[")]
    assert data == [f"{i:09d}" for i in (*range(5), *range(45, 50))]
    assert out[5].startswith("[task log capped at 100 B")
    assert out[6] == "[40 lines (400 B) of the job's log omitted from this task log; full log: /state/jobs/j/log.txt]"


def test_uncapped_copy_copies_everything():
    out: list[str] = []
    copy = CappedLogCopy(out.append, max_bytes=0)
    copy.feed("a\nb\n")
    copy.finish()
    assert out == ["a", "b"]
