"""What every timed scenario runs beside its pods: the configured engine's controllers on the lab
and one packet prober, started together and stopped in reverse order on every exit path."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from harness.controller import Controller, ControllerConfig

log = logging.getLogger(__name__)


def _stop_and_report(ctl: Controller) -> None:
    """Stop the controller; what its engines survived (failed syncs, an external program's
    malformed lines) goes to the log, once per node."""
    ctl.stop()
    for node, problems in ctl.errors.items():
        log.warning("controller on %s: %d problem(s), first: %s", node, len(problems), problems[0])


@contextlib.contextmanager
def controller_and_prober(lab: Any, config: ControllerConfig,
                          probe_timeout_s: float) -> Iterator[tuple[Controller, Any]]:
    """``(controller, prober)``, both started; on exit the prober stops first, then the
    controller (its threads may still be applying a sync)."""
    from harness.probe.packet import PacketProber

    with contextlib.ExitStack() as stack:
        ctl = Controller(lab, config).start()
        stack.callback(_stop_and_report, ctl)
        prober = PacketProber(timeout_s=probe_timeout_s)
        prober.start()
        stack.callback(prober.stop)
        yield ctl, prober
