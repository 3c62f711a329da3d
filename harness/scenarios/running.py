"""What every timed scenario runs beside its pods: the configured engine's controllers on the lab
and one packet prober, started together and stopped in reverse order on every exit path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from harness.controller import Controller, ControllerConfig


@contextlib.contextmanager
def controller_and_prober(lab: Any, config: ControllerConfig,
                          probe_timeout_s: float) -> Iterator[tuple[Controller, Any]]:
    """``(controller, prober)``, both started; on exit the prober stops first, then the
    controller (its threads may still be applying a sync)."""
    from harness.probe.packet import PacketProber

    with contextlib.ExitStack() as stack:
        ctl = Controller(lab, config).start()
        stack.callback(ctl.stop)
        prober = PacketProber(timeout_s=probe_timeout_s)
        prober.start()
        stack.callback(prober.stop)
        yield ctl, prober
