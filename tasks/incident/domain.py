"""Incident operations: an on-call SRE agent works alerts, services, tickets and pages.

The state (db.json) holds services, their deployments, alerts, log lines, metric baselines,
tickets, pages, the on-call roster and runbooks, plus two things no tool shows directly:
`faults` (the simulated root cause behind each unhealthy service) and the approvals of a
change freeze. Everything is simulated deterministically from the state: there is no clock
(`now_minute` is a fixed minute of the day), no randomness and no network.

How faults react to remediation:

- `memory_leak`  — cleared by restart_service;
- `bad_deploy`   — cleared by rolling back the faulty version (rolling back a release that
                   carried a schema migration breaks the service instead);
- `bad_config`   — cleared by setting the faulty config key back to its good value;
- `saturation`   — cleared by scaling to at least `needed_replicas`;
- `disk_full`, `lock_contention` (databases) — no tool fixes them; restarting the database
                   turns them into an outage;
- `dependency`   — a symptom of another service's fault (`upstream`); it clears by itself once
                   the upstream fault is gone.

A service's metrics are its baseline overlaid with its fault's symptoms; its health is
`down` (fault impact `outage`), `degraded`, or `healthy`. An alert's metric breaches when the
current value is above the alert's threshold.
"""

from __future__ import annotations

from typing import Any

from bench.domain import ToolError, Toolset, new_id

tools = Toolset()

SEVERITIES = ["sev1", "sev2", "sev3", "sev4"]
ALERT_SEVERITIES = ["critical", "warning", "info"]
ALERT_STATUSES = ["firing", "acked", "resolved"]
TICKET_STATUSES = ["open", "mitigated", "resolved"]

_NAME = {"type": "string", "minLength": 1, "description": "Service name, e.g. 'checkout'."}
_ALERT_ID = {"type": "string", "minLength": 1, "description": "Alert id, e.g. 'AL-3001'."}
_TICKET_ID = {"type": "string", "minLength": 1, "description": "Ticket id, e.g. 'INC-0117'."}
_TEAM = {"type": "string", "minLength": 1, "description": "Team name, e.g. 'commerce'."}
_APPROVAL = {
    "type": "string",
    "minLength": 1,
    "description": "Change-freeze approval id (e.g. 'CHG-1234'). Required only while a change freeze is active.",
}


# ---------------------------------------------------------------------------------------
# helpers (not tools)
# ---------------------------------------------------------------------------------------

def _service(db: dict[str, Any], name: str) -> dict[str, Any]:
    svc = db["services"].get(name)
    if svc is None:
        known = ", ".join(sorted(db["services"]))
        raise ToolError(f"no service named {name!r}; known services: {known}")
    return svc


def _alert(db: dict[str, Any], alert_id: str) -> dict[str, Any]:
    alert = db["alerts"].get(alert_id)
    if alert is None:
        raise ToolError(f"no alert {alert_id!r}; use list_alerts to see alert ids")
    return alert


def _ticket(db: dict[str, Any], ticket_id: str) -> dict[str, Any]:
    ticket = db["tickets"].get(ticket_id)
    if ticket is None:
        raise ToolError(f"no ticket {ticket_id!r}; use list_tickets to see ticket ids")
    return ticket


def _team(db: dict[str, Any], team: str) -> dict[str, Any]:
    roster = db["oncall"].get(team)
    if roster is None:
        known = ", ".join(sorted(db["oncall"]))
        raise ToolError(f"no team named {team!r}; known teams: {known}")
    return roster


def _metrics(db: dict[str, Any], name: str) -> dict[str, Any]:
    values = dict(db["metrics"].get(name, {}))
    fault = db["faults"].get(name)
    if fault:
        values.update(fault.get("symptoms", {}))
    return values


def _health(db: dict[str, Any], name: str) -> str:
    fault = db["faults"].get(name)
    if not fault:
        return "healthy"
    return "down" if fault.get("impact") == "outage" else "degraded"


def _breaching(db: dict[str, Any], alert: dict[str, Any]) -> tuple[bool, Any]:
    value = _metrics(db, alert["service"]).get(alert["metric"])
    return (value is not None and value > alert["threshold"]), value


def _settle(db: dict[str, Any]) -> None:
    """Dependency symptoms disappear once their upstream fault is gone (transitively)."""
    changed = True
    while changed:
        changed = False
        for name, fault in list(db["faults"].items()):
            if fault.get("type") == "dependency" and fault.get("upstream") not in db["faults"]:
                del db["faults"][name]
                changed = True


def _check_freeze(db: dict[str, Any], service: str, approval_id: str | None) -> str | None:
    """During a change freeze every change to a service needs an approval covering it."""
    freeze = db.get("change_freeze") or {}
    if not freeze.get("active"):
        return None
    if not approval_id:
        raise ToolError(
            f"a change freeze is in effect ({freeze.get('reason', 'no reason given')}): changes to services need a "
            "change-freeze approval id from the incident commander, passed as approval_id"
        )
    covered = (freeze.get("approvals") or {}).get(approval_id)
    if covered is None:
        raise ToolError(f"approval id {approval_id!r} is not a valid change-freeze approval")
    if service not in covered:
        raise ToolError(f"approval {approval_id} does not cover service {service!r}")
    return approval_id


def _record_change(db: dict[str, Any], svc: dict[str, Any], action: str, approval: str | None) -> None:
    change: dict[str, Any] = {"action": action, "minute": db["now_minute"]}
    if approval:
        change["approval_id"] = approval
    svc["last_change"] = change


def _alert_view(db: dict[str, Any], alert_id: str, alert: dict[str, Any]) -> dict[str, Any]:
    breaching, value = _breaching(db, alert)
    return {
        "id": alert_id,
        "service": alert["service"],
        "severity": alert["severity"],
        "status": alert["status"],
        "summary": alert["summary"],
        "metric": alert["metric"],
        "threshold": alert["threshold"],
        "current_value": value,
        "breaching": breaching,
        "fired_at_minute": alert["fired_at_minute"],
    }


def _ticket_view(ticket_id: str, ticket: dict[str, Any]) -> dict[str, Any]:
    return {"id": ticket_id, **ticket}


# ---------------------------------------------------------------------------------------
# alerts
# ---------------------------------------------------------------------------------------

@tools.tool(
    read_only=True,
    params={
        "status": {"type": "string", "enum": ALERT_STATUSES, "description": "Only alerts with this status."},
        "service": _NAME,
        "severity": {"type": "string", "enum": ALERT_SEVERITIES, "description": "Only alerts of this alert severity."},
    },
    optional=("status", "service", "severity"),
)
def list_alerts(db, status=None, service=None, severity=None):
    """List alerts, optionally filtered by status (firing, acked, resolved), service and alert
    severity (critical, warning, info). Each alert shows its metric, threshold, current value and
    whether it is still breaching."""
    if service is not None:
        _service(db, service)
    out = []
    for alert_id in sorted(db["alerts"]):
        alert = db["alerts"][alert_id]
        if status is not None and alert["status"] != status:
            continue
        if service is not None and alert["service"] != service:
            continue
        if severity is not None and alert["severity"] != severity:
            continue
        out.append(_alert_view(db, alert_id, alert))
    return out


@tools.tool(read_only=True, params={"alert_id": _ALERT_ID})
def get_alert(db, alert_id):
    """Show one alert: service, severity, status, metric, threshold, current value, whether it is
    still breaching, and the ids of tickets that link it."""
    alert = _alert(db, alert_id)
    view = _alert_view(db, alert_id, alert)
    view["tickets"] = sorted(tid for tid, t in db["tickets"].items() if alert_id in t["alert_ids"])
    return view


@tools.tool(read_only=False, params={"alert_id": _ALERT_ID})
def ack_alert(db, alert_id):
    """Acknowledge a firing alert (status firing -> acked): you are working on it."""
    alert = _alert(db, alert_id)
    if alert["status"] == "acked":
        raise ToolError(f"alert {alert_id} is already acknowledged")
    if alert["status"] == "resolved":
        raise ToolError(f"alert {alert_id} is resolved; there is nothing to acknowledge")
    alert["status"] = "acked"
    return {"alert_id": alert_id, "status": "acked"}


@tools.tool(read_only=False, params={"alert_id": _ALERT_ID})
def resolve_alert(db, alert_id):
    """Resolve an acknowledged alert (status acked -> resolved). Refused while the alert is not yet
    acknowledged or while its metric is still above the threshold (fix the cause first)."""
    alert = _alert(db, alert_id)
    if alert["status"] == "resolved":
        raise ToolError(f"alert {alert_id} is already resolved")
    if alert["status"] == "firing":
        raise ToolError(f"alert {alert_id} is not acknowledged; acknowledge it (ack_alert) before resolving it")
    breaching, value = _breaching(db, alert)
    if breaching:
        raise ToolError(
            f"alert {alert_id} cannot be resolved: {alert['service']} {alert['metric']} is {value}, still above the "
            f"threshold {alert['threshold']}; fix the cause first"
        )
    alert["status"] = "resolved"
    return {"alert_id": alert_id, "status": "resolved"}


# ---------------------------------------------------------------------------------------
# services: inspection
# ---------------------------------------------------------------------------------------

@tools.tool(read_only=True, params={"service": _NAME})
def get_service(db, service):
    """Show a service: owner team, kind (stateless, queue, database), whether it is customer-facing,
    current and previous version, replicas with min/max, dependencies and dependents, current
    health (healthy, degraded, down), config, restart count, and whether a change freeze is active."""
    svc = _service(db, service)
    dependents = sorted(n for n, s in db["services"].items() if service in s["depends_on"])
    view = {"name": service, **svc, "dependents": dependents, "health": _health(db, service)}
    view["change_freeze"] = bool((db.get("change_freeze") or {}).get("active"))
    return view


@tools.tool(read_only=True, params={"service": _NAME})
def get_metrics(db, service):
    """Current metrics snapshot of a service: cpu_pct, memory_pct, error_rate_pct, latency_p99_ms,
    disk_pct and rps (requests or messages per second)."""
    _service(db, service)
    return {"service": service, **_metrics(db, service)}


@tools.tool(
    read_only=True,
    params={"service": _NAME, "query": {"type": "string", "description": "Case-insensitive text to look for; omit for all lines."}},
    optional=("query",),
)
def search_logs(db, service, query=None):
    """Search a service's recent log lines: returns the lines containing `query` (case-insensitive
    substring match), or every line when query is omitted or empty."""
    _service(db, service)
    lines = db["logs"].get(service, [])
    needle = (query or "").strip().lower()
    matches = [line for line in lines if needle in line.lower()]
    return {"service": service, "query": query or "", "matches": matches, "total_lines": len(lines)}


@tools.tool(read_only=True, params={"service": _NAME})
def list_deployments(db, service):
    """A service's deployment history, oldest first: deployment id, version, minute, kind (deploy or
    rollback), who deployed it and whether it carried a schema migration."""
    _service(db, service)
    deps = [{"id": did, **d} for did, d in db["deployments"].items() if d["service"] == service]
    return sorted(deps, key=lambda d: (d["minute"], d["id"]))


@tools.tool(read_only=True, params={"service": _NAME})
def get_runbook(db, service):
    """The service's runbook: its known failure modes and the approved remediation for each."""
    _service(db, service)
    text = db["runbooks"].get(service)
    if text is None:
        raise ToolError(f"service {service} has no runbook; page its owner team")
    return {"service": service, "runbook": text}


# ---------------------------------------------------------------------------------------
# services: remediation
# ---------------------------------------------------------------------------------------

@tools.tool(read_only=False, params={"service": _NAME, "approval_id": _APPROVAL}, optional=("approval_id",))
def restart_service(db, service, approval_id=None):
    """Restart every replica of a service (rolling restart). Clears memory-leak (OOM) problems;
    does not fix bad deploys, bad config or saturation. Databases must not be restarted by on-call."""
    svc = _service(db, service)
    approval = _check_freeze(db, service, approval_id)
    fault = db["faults"].get(service)
    svc["restart_count"] = svc.get("restart_count", 0) + 1
    _record_change(db, svc, "restart", approval)
    if fault and fault["type"] == "memory_leak":
        del db["faults"][service]
    elif fault and svc["kind"] == "database" and fault["type"] in ("disk_full", "lock_contention"):
        # crash recovery cannot complete: the restart turns a degraded database into an outage
        fault["impact"] = "outage"
        fault["symptoms"] = {**fault.get("symptoms", {}), "error_rate_pct": 100.0}
    _settle(db)
    return {"service": service, "restarted": True, "restart_count": svc["restart_count"], "health": _health(db, service)}


@tools.tool(
    read_only=False,
    params={"service": _NAME, "replicas": {"type": "integer", "minimum": 0, "description": "The new replica count."},
            "approval_id": _APPROVAL},
    optional=("approval_id",),
)
def scale_service(db, service, replicas, approval_id=None):
    """Set a service's replica count. The count must be within the service's min_replicas and
    max_replicas. Scaling out fixes CPU/capacity saturation."""
    svc = _service(db, service)
    replicas = int(replicas)
    if replicas < svc["min_replicas"] or replicas > svc["max_replicas"]:
        raise ToolError(
            f"{service} must run between {svc['min_replicas']} and {svc['max_replicas']} replicas; {replicas} is out of range"
        )
    if replicas == svc["replicas"]:
        raise ToolError(f"{service} already runs {replicas} replicas")
    approval = _check_freeze(db, service, approval_id)
    previous = svc["replicas"]
    svc["replicas"] = replicas
    _record_change(db, svc, "scale", approval)
    fault = db["faults"].get(service)
    if fault and fault["type"] == "saturation" and replicas >= fault["needed_replicas"]:
        del db["faults"][service]
    _settle(db)
    return {"service": service, "previous_replicas": previous, "replicas": replicas, "health": _health(db, service)}


@tools.tool(
    read_only=False,
    params={"service": _NAME, "to_version": {"type": "string", "minLength": 1, "description": "Must be the service's previous_version."},
            "approval_id": _APPROVAL},
    optional=("approval_id",),
)
def rollback_service(db, service, to_version, approval_id=None):
    """Roll a service back to its previous deployed version (only the immediately previous version is
    allowed). Fixes problems introduced by the current release. Check list_deployments first: rolling
    back a release that carried a schema migration breaks the service."""
    svc = _service(db, service)
    previous = svc.get("previous_version")
    if not previous:
        raise ToolError(f"{service} has no previous version to roll back to")
    if to_version != previous:
        raise ToolError(f"{service} can only be rolled back to its previous deployed version {previous}, not {to_version}")
    approval = _check_freeze(db, service, approval_id)
    current = svc["version"]
    releases = [d for d in db["deployments"].values() if d["service"] == service and d["version"] == current]
    migration = any(d.get("schema_migration") for d in releases)
    dep_id = new_id(db, "deployment", "DEP-")
    record: dict[str, Any] = {
        "service": service, "version": to_version, "minute": db["now_minute"], "kind": "rollback",
        "by": "oncall", "schema_migration": False,
    }
    if approval:
        record["approval_id"] = approval
    db["deployments"][dep_id] = record
    svc["version"], svc["previous_version"] = to_version, current
    _record_change(db, svc, "rollback", approval)
    fault = db["faults"].get(service)
    if migration:
        db["faults"][service] = {
            "type": "schema_mismatch", "impact": "outage",
            "symptoms": {"error_rate_pct": 100.0},
        }
        db["logs"].setdefault(service, []).append(
            f"[t={db['now_minute']}] ERROR schema version mismatch: {to_version} cannot read tables migrated by {current}"
        )
    elif fault and fault["type"] == "bad_deploy" and fault.get("version") == current:
        del db["faults"][service]
    _settle(db)
    return {"service": service, "deployment_id": dep_id, "version": to_version, "rolled_back_from": current,
            "health": _health(db, service)}


@tools.tool(
    read_only=False,
    params={"service": _NAME, "key": {"type": "string", "minLength": 1, "description": "An existing config key of the service."},
            "value": {"type": "string", "description": "The new value (config values are strings)."},
            "approval_id": _APPROVAL},
    optional=("approval_id",),
)
def update_config(db, service, key, value, approval_id=None):
    """Set one existing config key of a service to a new value (values are strings). Fixes a bad
    config value when set to the correct value given in the runbook."""
    svc = _service(db, service)
    config = svc.get("config", {})
    if key not in config:
        raise ToolError(f"{service} has no config key {key!r}; its keys are: {', '.join(sorted(config))}")
    if config[key] == value:
        raise ToolError(f"{service} config {key} is already {value!r}")
    approval = _check_freeze(db, service, approval_id)
    old = config[key]
    config[key] = value
    _record_change(db, svc, "update_config", approval)
    fault = db["faults"].get(service)
    if fault and fault["type"] == "bad_config" and fault.get("key") == key and fault.get("good_value") == value:
        del db["faults"][service]
    _settle(db)
    return {"service": service, "key": key, "old_value": old, "value": value, "health": _health(db, service)}


# ---------------------------------------------------------------------------------------
# tickets, paging, on-call
# ---------------------------------------------------------------------------------------

@tools.tool(
    read_only=True,
    params={"status": {"type": "string", "enum": TICKET_STATUSES, "description": "Only tickets with this status."},
            "service": _NAME},
    optional=("status", "service"),
)
def list_tickets(db, status=None, service=None):
    """List incident tickets (id, title, severity, service, team, status, linked alert ids, notes),
    optionally filtered by status and service."""
    out = []
    for tid in sorted(db["tickets"]):
        ticket = db["tickets"][tid]
        if status is not None and ticket["status"] != status:
            continue
        if service is not None and ticket["service"] != service:
            continue
        out.append(_ticket_view(tid, ticket))
    return out


@tools.tool(
    read_only=False,
    params={
        "title": {"type": "string", "minLength": 1, "description": "Short description of the incident."},
        "service": {**_NAME, "description": "The service at the root cause of the incident."},
        "severity": {"type": "string", "enum": SEVERITIES, "description": "Ticket severity per policy: sev1 (worst) .. sev4."},
        "team": {**_TEAM, "description": "Assignee team: the owner team of `service`."},
        "alert_ids": {"type": "array", "items": _ALERT_ID, "description": "Ids of the alerts this incident covers."},
    },
)
def open_ticket(db, title, service, severity, team, alert_ids):
    """Open a new incident ticket linking the given alerts. Refused if one of the alerts is already
    linked to a ticket that is not resolved (add a note to that ticket instead)."""
    _service(db, service)
    _team(db, team)
    for aid in alert_ids:
        _alert(db, aid)
        for tid, t in sorted(db["tickets"].items()):
            if aid in t["alert_ids"] and t["status"] != "resolved":
                raise ToolError(f"alert {aid} is already linked to open ticket {tid}; update that ticket instead")
    tid = new_id(db, "ticket", "INC-")
    db["tickets"][tid] = {
        "title": title, "service": service, "severity": severity, "team": team, "status": "open",
        "alert_ids": sorted(set(alert_ids)), "notes": [], "opened_at_minute": db["now_minute"],
    }
    return {"ticket_id": tid, **db["tickets"][tid]}


@tools.tool(
    read_only=False,
    params={
        "ticket_id": _TICKET_ID,
        "status": {"type": "string", "enum": TICKET_STATUSES, "description": "New status."},
        "severity": {"type": "string", "enum": SEVERITIES, "description": "New severity."},
        "note": {"type": "string", "minLength": 1, "description": "A note to append (what was found or done)."},
        "link_alert_ids": {"type": "array", "items": _ALERT_ID, "minItems": 1, "description": "More alert ids to link."},
    },
    optional=("status", "severity", "note", "link_alert_ids"),
)
def update_ticket(db, ticket_id, status=None, severity=None, note=None, link_alert_ids=None):
    """Update a ticket: change its status (open, mitigated, resolved) or severity, append a note,
    and/or link more alerts. A ticket can be resolved only when all its linked alerts are resolved;
    a resolved ticket cannot be changed."""
    ticket = _ticket(db, ticket_id)
    if status is None and severity is None and note is None and link_alert_ids is None:
        raise ToolError("nothing to update: give status, severity, note and/or link_alert_ids")
    if ticket["status"] == "resolved":
        raise ToolError(f"ticket {ticket_id} is resolved and cannot be changed; open a new ticket")
    alerts = list(ticket["alert_ids"])
    for aid in link_alert_ids or []:
        _alert(db, aid)
        if aid not in alerts:
            alerts.append(aid)
    if status == "resolved":
        unresolved = [a for a in alerts if db["alerts"][a]["status"] != "resolved"]
        if unresolved:
            raise ToolError(f"ticket {ticket_id} still links unresolved alerts {', '.join(unresolved)}; resolve them first")
    ticket["alert_ids"] = sorted(alerts)
    if status is not None:
        ticket["status"] = status
    if severity is not None:
        ticket["severity"] = severity
    if note is not None:
        ticket["notes"].append(note)
    return {"ticket_id": ticket_id, **ticket}


@tools.tool(read_only=True, params={"team": _TEAM})
def get_oncall(db, team):
    """Who is on call for a team (primary and secondary)."""
    roster = _team(db, team)
    return {"team": team, **roster}


@tools.tool(
    read_only=False,
    params={"team": _TEAM, "message": {"type": "string", "minLength": 1, "description": "What the on-call engineer must know."},
            "alert_id": {**_ALERT_ID, "description": "The alert the page is about, if any."}},
    optional=("alert_id",),
)
def page_oncall(db, team, message, alert_id=None):
    """Page a team's primary on-call engineer with a message (and the alert it is about, if any).
    Use it to escalate what on-call may not do itself."""
    roster = _team(db, team)
    if alert_id is not None:
        _alert(db, alert_id)
    pid = new_id(db, "page", "PG-")
    db["pages"][pid] = {"team": team, "paged": roster["primary"], "message": message, "alert_id": alert_id,
                        "minute": db["now_minute"]}
    return {"page_id": pid, "team": team, "paged": roster["primary"]}
