"""The suite's speed rests on pytest-xdist's ``--dist loadgroup --no-loadscope-reorder``
(scripts/test.sh): each module carries one ``xdist_group`` mark (tests/conftest.py) and runs whole in
one worker, which builds its module fixtures once, and the longest modules are handed out first.
Two things broke the marks silently, each costing minutes of the suite (every module fixture built
again in each worker):

- tests/conftest.py added the marks in a hook that ran after pytest-xdist had read them (now
  ``tryfirst``);
- pytest 9.2 keeps a test's id in ``Node._id``, so xdist 3.8's ``Node._nodeid`` suffix is lost
  (pyproject.toml keeps pytest below 9).

This asks xdist's workers, as scripts/test.sh starts them, for the ids they schedule by: every test
of a module must carry its module's group, and the longest module must come first."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent

RECORDER = textwrap.dedent('''
    import os

    def pytest_collection_finish(session):
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            with open(os.path.join(os.environ["IDS_FOLDER"], worker), "w") as out:
                out.write("\\n".join(item.nodeid for item in session.items))
''')


@pytest.mark.slow  # starts two workers that import the suite (about 15 s on 2 cores)
def test_the_workers_schedule_a_module_as_one_group_longest_first(tmp_path):
    (tmp_path / "record_ids.py").write_text(RECORDER)
    ids_folder = tmp_path / "ids"
    ids_folder.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "IDS_FOLDER": str(ids_folder)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
                             "--setup-plan", "-q", "-p", "record_ids", "-p", "no:cacheprovider",
                             "tests/study/test_study_report.py", "tests/study/test_study_run.py"],
                            cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    workers = [worker.read_text().splitlines() for worker in sorted(ids_folder.iterdir())]
    assert len(workers) == 2 and workers[0] == workers[1]  # xdist schedules only when both collected the same
    ids = workers[0]
    modules = [nodeid.split("::")[0] for nodeid in ids]
    assert len(ids) > 5 and all(nodeid.endswith(f"@{module}") for nodeid, module in zip(ids, modules)), ids
    # the study run (minutes) before the report tests (seconds), although pytest collects it second
    assert modules[0] == "tests/study/test_study_run.py" and modules[-1] == "tests/study/test_study_report.py"
