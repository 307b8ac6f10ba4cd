"""Running a test's subprocess in its own process group, so that a timeout kills it and everything it started
(`accelerate launch` and its workers, DataLoader workers): a hang is a failure, never a stuck suite or processes
left behind on the machine."""

import os
import signal
import subprocess

TIMEOUT_SECONDS = 300


def run_in_process_group(
    command: list[str], timeout: float = TIMEOUT_SECONDS, **kwargs
) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True, **kwargs)` in a new session; at `timeout` the whole
    process group gets SIGKILL and `subprocess.TimeoutExpired` is raised with what the command printed."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        kill_process_group(process)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr) from expired
    except BaseException:
        kill_process_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL to every process in `process`'s group (its session leader is `process`), then reaps `process`."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
