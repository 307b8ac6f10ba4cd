"""Shared test setup: one torch thread, and a time limit on every test so that a hang fails instead of stalling."""

import faulthandler
import os
import signal
import sys

import pytest
import torch

# The tests use tiny models, for which thread start-up costs more than it saves; on a machine whose cores are busy
# with other work two threads also make tiny LSTM steps 10-20x slower. Subprocess tests set their own.
torch.set_num_threads(1)

# Seconds per test (its setup, call and teardown together), TL_NLP_TEST_TIMEOUT to change; `@pytest.mark.time_limit(s)`
# for one test. At the limit the test fails with a TimeoutError and the suite goes on; a test stuck in C code (a
# collective that never returns), which a signal handler cannot interrupt, gets 60 more seconds before faulthandler
# prints every thread's stack and ends the run. Subprocesses have their own limits (process_groups.py).
DEFAULT_TIME_LIMIT = float(os.environ.get("TL_NLP_TEST_TIMEOUT", "900"))
HARD_STOP_MARGIN = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): this test's time limit (default TL_NLP_TEST_TIMEOUT)")


def _time_limit(item) -> float:
    marker = item.get_closest_marker("time_limit")
    return float(marker.args[0]) if marker is not None else DEFAULT_TIME_LIMIT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = _time_limit(item)
    usable = limit > 0 and hasattr(signal, "SIGALRM")

    def on_alarm(signum, frame):
        raise TimeoutError(f"{item.nodeid} ran past its time limit of {limit:.0f} s")

    if usable:
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        faulthandler.dump_traceback_later(limit + HARD_STOP_MARGIN, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGALRM, previous)
