"""The suite's speed rests on pytest-xdist's ``--dist loadgroup`` (scripts/test.sh): tests that share
a trained model carry one ``xdist_group`` mark (tests/conftest.py) and must run in one worker,
which builds the model once. Two things broke it silently, each costing minutes of the suite (every
shared model and module fixture built again in each worker):

- tests/conftest.py added the marks in a hook that ran after pytest-xdist had read them (now
  ``tryfirst``);
- pytest 9.2 keeps a test's id in ``Node._id``, so xdist 3.8's ``Node._nodeid`` suffix is lost
  (pyproject.toml keeps pytest below 9).

This asks xdist's workers, as scripts/test.sh starts them, for the ids they schedule by: every test
of the tiny 2d model in tests/study/ must carry its group."""

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
def test_the_workers_schedule_a_shared_models_tests_as_one_group(tmp_path):
    (tmp_path / "record_ids.py").write_text(RECORDER)
    ids_folder = tmp_path / "ids"
    ids_folder.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "IDS_FOLDER": str(ids_folder)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--setup-plan", "-q",
                             "-p", "record_ids", "-p", "no:cacheprovider", "tests/study/test_study_run.py"],
                            cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 5), result.stdout[-2000:] + result.stderr[-2000:]
    ids = [line for worker in ids_folder.iterdir() for line in worker.read_text().splitlines()]
    shared = [nodeid for nodeid in ids if "test_the_resumed_run" in nodeid or "test_sigterm_stops" in nodeid]
    assert shared and all(nodeid.endswith("@tiny_model_2d_b") for nodeid in shared), shared
