"""gridflow command-line tools: run the services, subscribe as a department."""

SERVICES = {
    "intake": "services.intake.service:IntakeService",
    "routing": "services.routing.service:RoutingService",
    "escalation": "services.escalation.service:EscalationService",
    "notify": "services.notify.service:NotifyService",
}
