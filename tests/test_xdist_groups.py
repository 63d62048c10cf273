"""The suite's speed rests on pytest-xdist's ``--dist loadgroup`` (scripts/test.sh): tests that share
a trained model carry one ``xdist_group`` mark (tests/conftest.py) and must run in one worker,
which builds the model once. With pytest 9.2 and pytest-xdist 3.8 the marks were silently ignored
(xdist renames ``Node._nodeid``, pytest 9.2 reads ``Node._id``): every group was spread over both
workers and each built its models again, minutes of the suite. This runs a small suite the way
scripts/test.sh does and checks that a group stays in one worker."""

import os
import subprocess
import sys
import textwrap

CONFTEST = textwrap.dedent('''
    import os
    import pytest

    def pytest_collection_modifyitems(config, items):
        # as tests/conftest.py: marks added in this hook
        for item in items:
            item.add_marker(pytest.mark.xdist_group("shared" if "grouped" in item.name else item.name))

    @pytest.fixture(autouse=True)
    def record_worker(request, tmp_path_factory):
        with open(os.environ["WORKERS_FILE"], "a") as out:
            out.write(f"{request.node.name} {os.environ.get('PYTEST_XDIST_WORKER')}\\n")
''')
TESTS = "\n".join(f"def test_{kind}_{i}():\n    import time; time.sleep(0.2)\n"
                  for i in range(6) for kind in ("grouped", "free"))


def test_a_group_runs_in_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_sample.py").write_text(TESTS)
    workers_file = tmp_path / "workers.txt"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p",
                             "no:cacheprovider", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "WORKERS_FILE": str(workers_file)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runs = dict(line.split() for line in workers_file.read_text().splitlines())
    assert len(runs) == 12
    grouped = {worker for name, worker in runs.items() if "grouped" in name}
    assert len(grouped) == 1, f"the group ran in workers {sorted(grouped)}: xdist_group marks are ignored"
