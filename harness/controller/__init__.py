"""Controller model: the per-node sync loop around a policy engine (``harness.engines``) against
the lab, delivery delays, the 1-slot channel, mitigations and the sync metrics.

    from harness.controller import Controller, ControllerConfig
    with Controller(lab, ControllerConfig(strategy="restore", delivery="uniform:0.01,0.1")) as ctl:
        added = ctl.add_pod(pod)
        ctl.await_programmed(added.pod.key, nodes="all")
        print(ctl.metrics().to_prometheus())
"""

from harness.controller.channel import SyncChannel, SyncRequest
from harness.controller.delivery import DelayModel, Delivery, parse_delay
from harness.controller.loop import (
    AddedPod,
    Controller,
    ControllerConfig,
    NodeController,
    NotProgrammed,
)
from harness.controller.timeline import EventRecord, Phase, SyncRecord, Timeline

__all__ = [
    "AddedPod", "Controller", "ControllerConfig", "DelayModel", "Delivery", "EventRecord",
    "NodeController", "NotProgrammed", "Phase", "SyncChannel", "SyncRecord", "SyncRequest", "Timeline",
    "parse_delay",
]
