"""bench/dbt_stage.py: ``airflow standalone`` (here: a stand-in with children) never outlives the benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import alive, bound, token_pids, wait_for

ROOT = Path(__file__).resolve().parents[2]

# Like standalone: a parent with children, one of which starts a session of its own; ignores SIGINT.
STANDALONE = """
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
sleep = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"]
kids = [subprocess.Popen(sleep), subprocess.Popen(sleep, start_new_session=True)]
# An orphan without the token (as Airflow's LocalExecutor workers are: setproctitle overwrites the memory
# /proc/<pid>/environ reads): its parent starts it in a session of its own and exits at once.
spawn = ("import subprocess, sys; print(subprocess.Popen(" + repr(sleep) + ", env={}, start_new_session=True,"
         " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")
orphan = int(subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True, check=True).stdout)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    json.dump({"parent": os.getpid(), "children": [k.pid for k in kids], "orphan": orphan}, fh)
os.replace(tmp, sys.argv[1])
time.sleep(600)
"""

# The benchmark: starts the stand-in through ProcessGroup, then runs until it is signalled.
BENCH = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("dbt_stage", {bench!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
group = bench.ProcessGroup([sys.executable, {standalone!r}, {pids!r}], {{"PATH": "/usr/bin:/bin"}}, None,
                           grace_seconds=1)
with open({token!r}, "w") as fh:
    fh.write(group.token)
if {mode!r} == "exit":
    import pathlib
    while not pathlib.Path({pids!r}).exists():
        time.sleep(0.05)
    sys.exit(0)
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["sigterm", "sigint", "exit"])
def test_standalone_and_all_its_children_end_with_the_benchmark(tmp_path, how):
    standalone = tmp_path / "standalone.py"
    standalone.write_text(textwrap.dedent(STANDALONE))
    pids_file, token_file = tmp_path / "pids.json", tmp_path / "token"
    source = BENCH.format(bench=str(ROOT / "bench" / "dbt_stage.py"), standalone=str(standalone),
                          pids=str(pids_file), token=str(token_file), mode=how)  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(source)])
    token = ""
    try:
        wait_for(lambda: pids_file.exists() and token_file.exists(), timeout=60)
        token = token_file.read_text()
        pids = json.loads(pids_file.read_text())
        tokened = [pids["parent"], *pids["children"]]
        wait_for(lambda: set(tokened) <= set(token_pids(token)), timeout=30)
        everyone = [*tokened, pids["orphan"]]
        assert alive(pids["orphan"]) and pids["orphan"] not in token_pids(token)
        if how != "exit":
            driver.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        driver.wait(timeout=bound(60))
        assert token_pids(token) == []
        assert not [pid for pid in everyone if alive(pid)]
    finally:
        driver.kill()
        driver.wait()
        for pid in token_pids(token) if token else []:
            os.kill(pid, signal.SIGKILL)
        if pids_file.exists() and alive(orphan := json.loads(pids_file.read_text())["orphan"]):
            os.kill(orphan, signal.SIGKILL)
