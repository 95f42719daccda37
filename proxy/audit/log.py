"""The audit observer: one structured JSON line per request, workflow event and anomaly alert on stdout."""

from __future__ import annotations

from typing import Any

import structlog

from proxy.audit.records import event_kind, jsonable
from proxy.observe.events import AnomalyAlert, RequestEvent
from proxy.observe.logging import write_info_lines


class AuditLog:
    def __init__(self) -> None:
        self._log = structlog.get_logger("grantgate.audit")

    def __call__(self, event: Any) -> None:
        if isinstance(event, RequestEvent):
            self._log.info("s3_request", **event.as_dict())
        elif isinstance(event, AnomalyAlert):
            self._log.warning("anomaly_alert", **event.as_dict())
        else:
            fields = jsonable(event.as_dict() if hasattr(event, "as_dict") else event)
            fields = fields if isinstance(fields, dict) else {"value": fields}
            fields.pop("event", None)  # structlog's own key
            self._log.info("workflow_event", **{**fields, "kind": event_kind(event)})

    def observe_batch(self, events: list[Any]) -> None:
        """A batch from the bus: its request lines rendered in one pass (the rest one by one)."""
        requests = [e.as_dict() for e in events if isinstance(e, RequestEvent)]
        if not write_info_lines("s3_request", requests):
            for fields in requests:
                self._log.info("s3_request", **fields)
        for event in events:
            if not isinstance(event, RequestEvent):
                self(event)
