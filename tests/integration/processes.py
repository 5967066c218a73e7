"""Running the scripts as a user does: with no network where the machine allows it (`unshare -n`, the honest air-gap
test), and kill -9 in the middle of a run, the one way the resume tests start a training, wait for what it must have
written, and kill it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def network_is_isolatable() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def isolated(command: list[str]) -> list[str]:
    """The command in a network namespace with no network, where the machine allows one."""
    return ["unshare", "-n", *command] if network_is_isolatable() else command


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """The command in the project root; the test fails with its output's tail if it fails."""
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def kill_9_once(command: list[str], log: Path, ready: Callable[[], bool], *, waiting_for: str, group: bool,
                timeout: float = 300, poll_seconds: float = 0.05) -> subprocess.Popen:
    """Start `command` in the project root, its output to `log`, and kill it with SIGKILL as soon as `ready()` holds;
    the test fails if the process ends first (with the log's tail) or `ready()` does not hold within `timeout` seconds.
    `group`: the command runs in a session of its own and its whole process group is killed, so nothing it started goes
    on writing; else only the process itself. `waiting_for` names what `ready()` waits for, in the failure messages.
    Returns the killed process, reaped."""
    with open(log, "w") as handle:  # a file, not a pipe: a full pipe would stall the run before the kill
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=group)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {waiting_for}:\n{log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"{timeout:.0f} s without {waiting_for}"
        time.sleep(poll_seconds)
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return process
