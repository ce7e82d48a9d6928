"""Spec fuzzing (issue 5, item 1): a bad spec never hides another pipeline.

Mutated specs (hypothesis: changed, deleted and added fields with hostile values, edited YAML text, random
text) are written beside the valid churn spec. Properties, for every case:

- the churn pipeline's DAG is built;
- a rejected spec is reported naming its file, and each problem starts with the field (or the YAML line);
- nothing raises out of the factory (``dags/retrain.py``) and no rejection is an internal error;
- an accepted spec builds a DAG that passes the DagBag's own checks.

Most cases go through ``collect_pipelines`` (what both DAG files call; cheap); a handful, plus every
concrete case from the issue at once, go through a real ``DagBag`` of ``dags/``. The number of cases run
is printed at the end of the module (``spec fuzz: N cases``). ``RETRAIN_FUZZ_EXAMPLES`` scales the
property runs; ``RETRAIN_FUZZ_RANDOM=1`` explores new examples instead of the fixed, derandomised ones.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_retrain.dag_factory import collect_pipelines
from airflow_retrain.spec import PipelineSpec, SpecError

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
CHURN_TEXT = (ROOT / "include" / "pipelines" / "churn.yaml").read_text()
CHURN = yaml.safe_load(CHURN_TEXT)
FUZZ_FILE = "zz_fuzz.yaml"  # sorts after churn.yaml: a mutated spec named "churn" is the duplicate
# The base of every mutation: the churn spec under another name and registered model (a registered model
# belongs to one spec), so that it is valid beside churn.yaml.
FUZZED = {**CHURN, "name": "fuzzed", "registry": {**CHURN["registry"], "model_name": "fuzzed"}}
FUZZED_TEXT = CHURN_TEXT.replace("\nname: churn\n", "\nname: fuzzed\n").replace(
    "\n  model_name: churn\n", "\n  model_name: fuzzed\n"
)
assert yaml.safe_load(FUZZED_TEXT) == FUZZED
assert FUZZED_TEXT != CHURN_TEXT
EXAMPLES = int(os.environ.get("RETRAIN_FUZZ_EXAMPLES", "100"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("RETRAIN_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
CASES = {"collect_pipelines": 0, "dagbag": 0, "rejected": 0, "accepted": 0}


@pytest.fixture(scope="module", autouse=True)
def report_case_count(request):
    yield
    total = CASES["collect_pipelines"] + CASES["dagbag"]
    line = (
        f"spec fuzz: {total} cases ({CASES['collect_pipelines']} through collect_pipelines, "
        f"{CASES['dagbag']} through a real DagBag; {CASES['rejected']} rejected, {CASES['accepted']} accepted)"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + line)
    if out := os.environ.get("RETRAIN_FUZZ_REPORT"):
        Path(out).write_text(json.dumps({**CASES, "total": total}))


def _paths(node, prefix=()):
    """Every path into the churn spec (mappings and their leaves)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


PATHS = sorted(set(_paths(CHURN)))


def _lookup(path):
    node = CHURN
    for key in path:
        node = node[key]
    return node


MAPPINGS = [()] + [p for p in PATHS if isinstance(_lookup(p), dict)]

NASTY_TEXT = [
    "not a cron", "61 * * * *", "0 0 31 2 *", "0 0 30 2 *", "0 0 * * 8", "* * * * * * *", "@weekley", "@once",
    "@continuous", "", " ", "x" * 101, "x" * 5000, "../../../../etc/passwd", "/etc/passwd", "include/../..",
    "{{ conn.mlflow_default.password }}", "{% raw %}", "$(touch /tmp/pwned)", "`id`", "a=b", "a\x00b", "\x1b[31m",
    "--profiles-dir=/etc", "-s", "marts.churn_features", '"warehouse"."marts"."churn_features"', "customer_id",
    "churned", "Europe/Berlin", "Mars/Olympus", "UTC+25", "2026-13-45", "1e400", "NaN", "-inf", "true", "null",
    "churn", "CHURN", "o'brien", "ü∂ƒ©", "\u202e", "dbt", "include/training/churn/train.py", "tag:churn",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(NASTY_TEXT),
    st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=-14))])),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(NASTY_TEXT)), SCALARS, max_size=3),
)


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _delete(data, path):
    node = data
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


@st.composite
def mutated_specs(draw) -> dict:
    """The churn spec with 1-3 fields set to hostile values, deleted, or added."""
    data = json.loads(json.dumps(FUZZED, default=str))
    data["start_date"] = CHURN["start_date"]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if op == "set":
            _set(data, draw(st.sampled_from(PATHS)), draw(VALUES))
        elif op == "delete":
            _delete(data, draw(st.sampled_from(PATHS)))
        else:
            parent = draw(st.sampled_from(MAPPINGS))
            key = draw(st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(NASTY_TEXT)))
            _set(data, (*parent, key), draw(VALUES))
    return data


@st.composite
def edited_yaml(draw) -> str:
    """The churn spec's text with a few characters deleted, replaced or inserted."""
    text = FUZZED_TEXT
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        insert = draw(st.one_of(st.text(max_size=8), st.sampled_from([":", "- ", "\n  ", "{", "&a", "*a", "!!python/object:os.system", "\t", "<<: *x"])))
        text = text[:at] + insert + text[at + cut :]
    return text


def check_case(content: str | bytes) -> str:
    """Write ``content`` beside the valid churn spec, collect the pipelines and check the properties."""
    with tempfile.TemporaryDirectory(prefix="spec-fuzz-") as folder:
        specs = Path(folder)
        (specs / "churn.yaml").write_text(CHURN_TEXT)
        fuzz = specs / FUZZ_FILE
        fuzz.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        dags, errors = collect_pipelines(specs)  # raises -> the test fails: retrain.py would have raised
        CASES["collect_pipelines"] += 1
        assert "churn_retrain" in dags, errors
        assert str(specs / "churn.yaml") not in errors
        if str(fuzz) in errors:
            CASES["rejected"] += 1
            error = errors[str(fuzz)]
            assert isinstance(error, SpecError)
            assert str(fuzz) in str(error)
            assert error.problems
            for problem in error.problems:
                assert "could not be validated" not in problem, f"internal error, not a named rejection: {problem}"
                assert "the DAG cannot be built" not in problem, f"spec validation missed a DAG error: {problem}"
                assert problem.startswith("not valid YAML") or _names_a_field(problem), problem
            return "rejected"
        CASES["accepted"] += 1
        assert len(dags) == 2, (dags, errors)
        # The dag-processor serializes every DAG it parsed; a failure there is an import error of retrain.py.
        from airflow.serialization.serialized_objects import DagSerialization

        for dag in dags.values():
            DagSerialization.to_dict(dag)
        return "accepted"


def _names_a_field(problem: str) -> bool:
    """``<field path>: <message>``, where the path starts at a spec field or names an unknown one."""
    if problem.startswith(("<top level>: ", "<file>: ")):
        return True
    if problem.startswith(("'", '"')):  # a top-level key that is not a plain name, quoted
        return problem.endswith(": unknown field")
    top = re.match(r"([A-Za-z0-9_\-]+)[.:]", problem)
    return bool(top) and (top.group(1) in PipelineSpec.model_fields or problem.endswith(": unknown field"))


@pytest.mark.slow
@FUZZ_SETTINGS
@given(mutated_specs())
def test_mutated_fields_never_hide_the_valid_pipeline(data):
    check_case(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


@pytest.mark.slow
@FUZZ_SETTINGS
@given(edited_yaml())
def test_edited_yaml_never_hides_the_valid_pipeline(text):
    check_case(text)


@settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // 3))
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_files_never_hide_the_valid_pipeline(content):
    check_case(content)


# --- concrete cases from issue 5, each through collect_pipelines and all at once through a DagBag ---


def _spec_text(**changes) -> str:
    data = json.loads(json.dumps(CHURN, default=str))
    data["start_date"] = CHURN["start_date"]
    if "name" in changes:  # its own registered model too: two specs never share one
        changes.setdefault("registry__model_name", changes["name"])
    for dotted, value in changes.items():
        _set(data, tuple(dotted.split("__")), value)
    return yaml.safe_dump(data, sort_keys=False)


CONCRETE = {
    "bad_cron.yaml": (_spec_text(name="p1", schedule="not a cron"), "schedule"),
    "minute_61.yaml": (_spec_text(name="p2", schedule="61 * * * *"), "schedule"),
    "feb_31.yaml": (_spec_text(name="p3", schedule="0 0 31 2 *"), "schedule"),
    "long_tag.yaml": (_spec_text(name="p4", tags=["t" * 101]), "tags"),
    "timezone.yaml": (_spec_text(name="p5", timezone="Nowhere/Land"), "timezone"),
    "epoch_start.yaml": (_spec_text(name="p6", start_date=1700000000), "start_date"),
    "retries_true.yaml": (_spec_text(name="p7", retries=True), "retries"),
    "nan_price.yaml": (_spec_text(name="p8", training__resources__hourly_price_usd=float("nan")), "training.resources.hourly_price_usd"),
    "inf_margin.yaml": (_spec_text(name="p9", registry__min_improvement=float("inf")), "registry.min_improvement"),
    "hp_key.yaml": (_spec_text(name="p10", training__hyperparameters={"a=b": 1}), "training.hyperparameters"),
    "hp_subst.yaml": (_spec_text(name="p11", training__hyperparameters={"$(id)": 1}), "training.hyperparameters"),
    "hp_nul.yaml": (_spec_text(name="p12", training__hyperparameters={"x": "a\x00b"}), "training.hyperparameters"),
    "schema_prefix.yaml": (_spec_text(name="p13", dataset__feature_table="marts.churn_features"), "dataset.feature_table"),
    "target_is_id.yaml": (_spec_text(name="p14", dataset__target_column="customer_id"), "dataset"),
    "abs_entry.yaml": (_spec_text(name="p15", training__entry_point="/etc/passwd"), "training.entry_point"),
    "dotdot_dbt.yaml": (_spec_text(name="p16", dbt__project_dir="../.."), "dbt.project_dir"),
    "dup_keys.yaml": (CHURN_TEXT.replace("\nname: churn\n", "\nname: p17\nname: p18\n", 1), "duplicate key 'name'"),
}


def test_the_unmutated_base_is_accepted():
    assert check_case(FUZZED_TEXT) == "accepted"
    assert check_case(yaml.safe_dump(FUZZED)) == "accepted"


@pytest.mark.parametrize("file_name", sorted(CONCRETE))
def test_concrete_issue_cases_are_rejected_naming_file_and_field(file_name):
    text, field = CONCRETE[file_name]
    assert check_case(text) == "rejected"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / file_name).write_text(text)
        errors = collect_pipelines(folder)[1]
        assert f"{field}" in str(errors[str(Path(folder) / file_name)])


def _dagbag(specs_dir: Path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RETRAIN_SPECS_DIR", str(specs_dir))
    bag = DagBag(dag_folder=str(DAGS))
    CASES["dagbag"] += 1
    return bag


def test_every_concrete_case_at_once_through_a_real_dagbag(tmp_path, monkeypatch):
    (tmp_path / "churn.yaml").write_text(CHURN_TEXT)
    (tmp_path / "UPPER.YAML").write_text(_spec_text(name="upper"))  # *.YAML files are specs too
    for file_name, (text, _) in CONCRETE.items():
        (tmp_path / file_name).write_text(text)
    bag = _dagbag(tmp_path, monkeypatch)
    assert sorted(d for d in bag.dag_ids if d.endswith("_retrain")) == ["churn_retrain", "upper_retrain"]
    assert [Path(p).name for p in bag.import_errors] == ["retrain_spec_check.py"]  # never retrain.py
    message = next(iter(bag.import_errors.values()))
    for file_name, (_, field) in CONCRETE.items():
        assert str(tmp_path / file_name) in message, file_name
        assert field in message, field


@settings(FUZZ_SETTINGS, max_examples=max(3, EXAMPLES // 30))
@given(mutated_specs())
def test_mutated_specs_through_a_real_dagbag(data):
    monkeypatch = pytest.MonkeyPatch()
    try:
        with tempfile.TemporaryDirectory(prefix="spec-fuzz-bag-") as folder:
            specs = Path(folder)
            (specs / "churn.yaml").write_text(CHURN_TEXT)
            (specs / FUZZ_FILE).write_text(yaml.safe_dump(data, allow_unicode=True))
            bag = _dagbag(specs, monkeypatch)
            assert "churn_retrain" in bag.dag_ids
            for where in bag.import_errors:
                assert Path(where).name == "retrain_spec_check.py", bag.import_errors
                assert str(specs / FUZZ_FILE) in bag.import_errors[where]
    finally:
        monkeypatch.undo()
