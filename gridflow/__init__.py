"""gridflow command-line tools: run the services, subscribe as a department."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gridflow")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.1.0"

SERVICES = {
    "intake": "services.intake.service:IntakeService",
    "routing": "services.routing.service:RoutingService",
    "escalation": "services.escalation.service:EscalationService",
    "notify": "services.notify.service:NotifyService",
    "monitor": "services.monitor.service:MonitorService",
}
# The services a report passes through; the monitor only watches them.
PIPELINE = ("intake", "routing", "escalation", "notify")
