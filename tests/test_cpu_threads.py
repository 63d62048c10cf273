"""OMP_WAIT_POLICY=PASSIVE for pu-nnunet and the processes it starts, unless the user chose a policy."""

import os
import subprocess
import sys

from pu_nnunet.cpu_threads import WAIT_POLICY_VARIABLE, passive_wait_environment
from pu_nnunet.study.execution.nnunet_commands import nnunet_environment


def test_passive_waits_are_the_default_and_a_users_policy_is_kept():
    assert passive_wait_environment({})[WAIT_POLICY_VARIABLE] == "PASSIVE"
    assert passive_wait_environment({WAIT_POLICY_VARIABLE: "ACTIVE"})[WAIT_POLICY_VARIABLE] == "ACTIVE"


def test_nnunet_commands_get_passive_waits(tmp_path, monkeypatch):
    monkeypatch.delenv(WAIT_POLICY_VARIABLE, raising=False)
    assert nnunet_environment(tmp_path)[WAIT_POLICY_VARIABLE] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY_VARIABLE, "active")
    assert nnunet_environment(tmp_path)[WAIT_POLICY_VARIABLE] == "active"


def _policy_seen_by_cli(env_policy):
    """The policy in the environment of a pu-nnunet process when its subcommand runs (torch imported later)."""
    env = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_VARIABLE}
    if env_policy is not None:
        env[WAIT_POLICY_VARIABLE] = env_policy
    code = ("import os, sys; from pu_nnunet import cli; "
            "assert 'torch' not in sys.modules; cli.use_passive_waits(); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_cli_process_sets_passive_waits_before_torch_loads():
    assert _policy_seen_by_cli(None) == "PASSIVE"
    assert _policy_seen_by_cli("ACTIVE") == "ACTIVE"
