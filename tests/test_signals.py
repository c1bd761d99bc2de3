"""signals.py: within stop_on_sigterm a SIGTERM is a request, acted on at the next safe point."""
import os
import signal

import pytest

from enat_lightning.errors import Terminated
from enat_lightning.signals import stop_on_sigterm


def test_sigterm_is_recorded_and_raised_at_the_next_check():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm("enat x", "rerun it") as stop:
        stop.check("after chunk 0")  # nothing received: no-op
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, not fatal
        assert stop.received
        with pytest.raises(Terminated, match=r"^enat x: stopped by SIGTERM after chunk 1; rerun it$") as e:
            stop.check("after chunk 1")
    assert e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
