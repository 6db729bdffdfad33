"""Calendar domain: an executive assistant scheduling meetings for Northwind Labs.

State (db.json):
  today      the simulation's fixed current date (UTC), "YYYY-MM-DD"
  zones      zone code -> {name, offset_minutes}: fixed UTC offsets, no daylight saving
  people     email -> {name, title, zone, manager, working_hours {start, end, days}, out_of_office}
  rooms      room id -> {name, office (zone code), capacity, equipment}
  events     event id -> {id, title, organizer, attendees (sorted emails, organizer included),
             guests (sorted external emails), start, end (UTC), room (id or null), status}

Every time a tool reads or writes is UTC, written "YYYY-MM-DDTHH:MM". Working hours are local to
each person's zone. Tools are deterministic: no clock, no randomness; dates are pure arithmetic.
"""

from __future__ import annotations

import datetime as _dt

from bench.domain import ToolError, Toolset, new_id

tools = Toolset()

COMPANY_DOMAIN = "corp.example"
ZONE_CODES = ["UTC", "LON", "BER", "NYC", "SFO", "BLR", "TYO"]
EQUIPMENT = ["video", "whiteboard", "projector"]
MAX_EVENT_MINUTES = 480
_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_WEEKDAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_FMT = "%Y-%m-%dT%H:%M"

# -- argument schemas -------------------------------------------------------------------------
UTC_TIME = {
    "type": "string",
    "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):(00|15|30|45)$",
    "description": "A UTC time 'YYYY-MM-DDTHH:MM' (no 'Z', no offset), minutes 00, 15, 30 or 45; e.g. '2026-12-01T14:00'.",
}
ANY_TIME = {
    "type": "string",
    "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d$",
    "description": "A wall-clock time 'YYYY-MM-DDTHH:MM' (no 'Z', no offset); e.g. '2026-12-01T09:30'.",
}
DATE = {
    "type": "string",
    "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$",
    "description": "A UTC calendar date 'YYYY-MM-DD'.",
}
EMAIL = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
    "description": "An email address, e.g. 'alice.moreau@corp.example'.",
}
EVENT_ID = {"type": "string", "pattern": r"^EV\d{4}$", "description": "An event id such as 'EV0007'."}
ROOM_ID = {"type": "string", "pattern": r"^[A-Z]{3}-\d$", "description": "A room id such as 'BER-2'."}
ZONE = {"type": "string", "enum": ZONE_CODES, "description": "A zone code: " + ", ".join(ZONE_CODES) + "."}


# -- helpers ----------------------------------------------------------------------------------
def _parse(text: str) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(text, _FMT)
    except ValueError:
        raise ToolError(f"{text!r} is not a valid time (expected YYYY-MM-DDTHH:MM)") from None


def _parse_date(text: str) -> _dt.date:
    try:
        return _dt.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ToolError(f"{text!r} is not a valid date (expected YYYY-MM-DD)") from None


def _fmt(moment: _dt.datetime) -> str:
    return moment.strftime(_FMT)


def _hm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _offset(db, zone: str) -> int:
    if zone == "UTC":
        return 0
    info = db["zones"].get(zone)
    if info is None:
        raise ToolError(f"unknown zone {zone!r}; known zones: UTC, " + ", ".join(db["zones"]))
    return info["offset_minutes"]


def _offset_text(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _is_internal(email: str) -> bool:
    return email.lower().endswith("@" + COMPANY_DOMAIN)


def _person(db, email: str) -> dict:
    email = email.strip().lower()
    person = db["people"].get(email)
    if person is None:
        if _is_internal(email):
            raise ToolError(f"no person with email {email} in the company directory (use find_person)")
        raise ToolError(f"{email} is not a company email; external guests are not in the directory")
    return person


def _event(db, event_id: str) -> dict:
    event = db["events"].get(event_id)
    if event is None:
        raise ToolError(f"no event {event_id}")
    return event


def _live_event(db, event_id: str) -> dict:
    event = _event(db, event_id)
    if event["status"] != "confirmed":
        raise ToolError(f"event {event_id} is {event['status']}")
    return event


def _room(db, room_id: str) -> dict:
    room = db["rooms"].get(room_id)
    if room is None:
        raise ToolError(f"no room {room_id}; rooms: " + ", ".join(sorted(db["rooms"])))
    return room


def _interval(db, start: str, end: str) -> tuple[_dt.datetime, _dt.datetime]:
    """A checked meeting interval: on the 15-minute grid, end after start, at most 8 hours, and
    not before today."""
    s, e = _parse(start), _parse(end)
    if e <= s:
        raise ToolError(f"the end {end} must be after the start {start}")
    if (e - s) > _dt.timedelta(minutes=MAX_EVENT_MINUTES):
        raise ToolError(f"an event may last at most {MAX_EVENT_MINUTES // 60} hours")
    today = _parse_date(db["today"])
    if s.date() < today:
        raise ToolError(f"{start} is in the past (today is {db['today']})")
    return s, e


def _overlaps(a_start, a_end, b_start, b_end) -> bool:
    return a_start < b_end and b_start < a_end


def _event_span(event) -> tuple[_dt.datetime, _dt.datetime]:
    return _parse(event["start"]), _parse(event["end"])


def _working_problem(db, email: str, s: _dt.datetime, e: _dt.datetime) -> str | None:
    """Why [s, e) (UTC) is outside this person's working hours, or None."""
    person = db["people"][email]
    offset = _dt.timedelta(minutes=_offset(db, person["zone"]))
    ls, le = s + offset, e + offset
    hours = person["working_hours"]
    local = f"{_fmt(ls)}-{le.strftime('%H:%M')} {person['zone']} time"
    if _WEEKDAYS[ls.weekday()] not in hours["days"]:
        return f"{email} does not work on {_WEEKDAY_NAMES[ls.weekday()]}s (that is {local})"
    day_start = _dt.datetime.combine(ls.date(), _dt.time()) + _dt.timedelta(minutes=_hm(hours["start"]))
    day_end = _dt.datetime.combine(ls.date(), _dt.time()) + _dt.timedelta(minutes=_hm(hours["end"]))
    if ls < day_start or le > day_end:
        return f"{local} is outside {email}'s working hours ({hours['start']}-{hours['end']} {person['zone']})"
    return None


def _busy(db, email: str, s, e, ignore: str | None = None) -> str | None:
    """Why this person is not free during [s, e): another confirmed event or out of office."""
    for block in db["people"][email].get("out_of_office", []):
        if _overlaps(s, e, _parse(block["start"]), _parse(block["end"])):
            return f"{email} is out of office from {block['start']} to {block['end']} UTC"
    for eid, event in sorted(db["events"].items()):
        if eid == ignore or event["status"] != "confirmed" or email not in event["attendees"]:
            continue
        es, ee = _event_span(event)
        if _overlaps(s, e, es, ee):
            return f"{email} is already booked {event['start']}-{ee.strftime('%H:%M')} UTC ({eid} '{event['title']}')"
    return None


def _check_attendee(db, email: str, s, e, ignore: str | None = None) -> None:
    problem = _working_problem(db, email, s, e) or _busy(db, email, s, e, ignore)
    if problem:
        raise ToolError(problem)


def _room_busy(db, room_id: str, s, e, ignore: str | None = None) -> str | None:
    for eid, event in sorted(db["events"].items()):
        if eid == ignore or event["status"] != "confirmed" or event.get("room") != room_id:
            continue
        es, ee = _event_span(event)
        if _overlaps(s, e, es, ee):
            return f"room {room_id} is booked {event['start']}-{ee.strftime('%H:%M')} UTC by {eid}"
    return None


def _headcount(event) -> int:
    return len(event["attendees"]) + len(event["guests"])


def _event_view(event) -> dict:
    s, e = _event_span(event)
    view = dict(event)
    view["duration_minutes"] = int((e - s).total_seconds() // 60)
    view["headcount"] = _headcount(event)
    return view


def _summary(event) -> dict:
    return {
        "event_id": event["id"], "title": event["title"], "start": event["start"], "end": event["end"],
        "organizer": event["organizer"], "room": event["room"],
    }


def _norm_emails(emails: list[str]) -> list[str]:
    return [e.strip().lower() for e in emails]


# -- read tools -------------------------------------------------------------------------------
@tools.tool(read_only=True)
def get_calendar_info(db):
    """Today's date (the simulation's fixed 'today', UTC), the company email domain, and the
    time-zone table: each zone code with its fixed UTC offset (no daylight saving)."""
    today = _parse_date(db["today"])
    return {
        "today": db["today"],
        "weekday": _WEEKDAY_NAMES[today.weekday()],
        "company_email_domain": COMPANY_DOMAIN,
        "zones": {code: {"name": z["name"], "utc_offset": _offset_text(z["offset_minutes"])} for code, z in db["zones"].items()},
        "note": "All tool times are UTC, written YYYY-MM-DDTHH:MM.",
    }


@tools.tool(read_only=True, params={"query": {"type": "string", "minLength": 2, "description": "A name, part of a name, or an email address."}})
def find_person(db, query):
    """Search the company directory by name (full, first, last or part of it; case-insensitive) or
    by email. Returns every match with email, name, title and zone code. An empty list means
    nobody matched (external guests are never in the directory)."""
    q = " ".join(query.lower().split())
    matches = []
    for email, p in sorted(db["people"].items()):
        if q in p["name"].lower() or q == email or (len(q) >= 3 and q in email):
            matches.append({"email": email, "name": p["name"], "title": p["title"], "zone": p["zone"]})
    return {"query": query, "matches": matches}


@tools.tool(read_only=True, params={"email": EMAIL})
def get_person(db, email):
    """A person's full directory record: name, title, zone code and its UTC offset, manager,
    working hours (local time in their own zone, and the working days), and out-of-office
    blocks (UTC)."""
    person = _person(db, email)
    record = dict(person)
    record["email"] = email.strip().lower()
    record["utc_offset"] = _offset_text(_offset(db, person["zone"]))
    return record


@tools.tool(
    read_only=True,
    params={
        "date": DATE,
        "person": {**EMAIL, "description": "List this person's events (as organizer or attendee)."},
        "room_id": {**ROOM_ID, "description": "Or list this room's bookings."},
    },
    optional=("person", "room_id"),
)
def list_events(db, date, person=None, room_id=None):
    """List the confirmed events overlapping one UTC calendar date (00:00-24:00 UTC), for a
    person (events they attend or organize, plus their out-of-office blocks) or for a room (its
    bookings). Give exactly one of `person` or `room_id`. Sorted by start time; times are UTC."""
    if (person is None) == (room_id is None):
        raise ToolError("give exactly one of person or room_id")
    day = _parse_date(date)
    lo = _dt.datetime.combine(day, _dt.time())
    hi = lo + _dt.timedelta(days=1)
    result: dict = {"date": date}
    if person is not None:
        email = person.strip().lower()
        _person(db, email)
        result["person"] = email
        picked = [ev for ev in db["events"].values() if ev["status"] == "confirmed" and email in ev["attendees"]]
        result["out_of_office"] = [b for b in db["people"][email].get("out_of_office", []) if _overlaps(lo, hi, _parse(b["start"]), _parse(b["end"]))]
    else:
        _room(db, room_id)
        result["room_id"] = room_id
        picked = [ev for ev in db["events"].values() if ev["status"] == "confirmed" and ev.get("room") == room_id]
    picked = [ev for ev in picked if _overlaps(lo, hi, *_event_span(ev))]
    picked.sort(key=lambda ev: (ev["start"], ev["id"]))
    result["events"] = [_summary(ev) for ev in picked]
    return result


@tools.tool(read_only=True, params={"event_id": EVENT_ID})
def get_event(db, event_id):
    """One event in full: title, organizer, attendees (company people, organizer included),
    guests (external emails), start and end (UTC), duration, headcount, room and status
    ('confirmed' or 'cancelled')."""
    return _event_view(_event(db, event_id))


@tools.tool(
    read_only=True,
    params={
        "attendees": {"type": "array", "items": EMAIL, "minItems": 1, "uniqueItems": True,
                      "description": "Company emails of everyone who must attend (include the organizer)."},
        "date": DATE,
        "duration_minutes": {"type": "integer", "minimum": 15, "maximum": MAX_EVENT_MINUTES, "multipleOf": 15},
    },
)
def find_free_slots(db, attendees, date, duration_minutes):
    """Find when all the given company people can meet on one UTC date (00:00-24:00 UTC): the
    windows inside every attendee's working hours (in their own zone) where none of them has a
    confirmed event or is out of office, and that are at least `duration_minutes` long. Windows
    are UTC and on the 15-minute grid, earliest first; a meeting may start at any quarter hour
    from a window's start up to its end minus the duration. External guests cannot be checked."""
    emails = _norm_emails(attendees)
    for email in emails:
        _person(db, email)
    day = _parse_date(date)
    lo = _dt.datetime.combine(day, _dt.time())
    step = _dt.timedelta(minutes=15)
    free = []
    for i in range(96):
        s = lo + i * step
        e = s + step
        ok = all(_working_problem(db, m, s, e) is None and _busy(db, m, s, e) is None for m in emails)
        free.append(ok)
    windows = []
    i = 0
    while i < 96:
        if not free[i]:
            i += 1
            continue
        j = i
        while j < 96 and free[j]:
            j += 1
        if (j - i) * 15 >= duration_minutes:
            windows.append({"start": _fmt(lo + i * step), "end": _fmt(lo + j * step)})
        i = j
    return {"date": date, "attendees": emails, "duration_minutes": duration_minutes, "windows": windows,
            "note": "times are UTC"}


@tools.tool(read_only=True, params={"office": {**ZONE, "description": "Only rooms in this office (zone code)."}}, optional=("office",))
def list_rooms(db, office=None):
    """List meeting rooms (id, name, office, capacity, equipment), optionally of one office."""
    rooms = [{"room_id": rid, **r} for rid, r in sorted(db["rooms"].items()) if office is None or r["office"] == office]
    return {"rooms": rooms}


@tools.tool(
    read_only=True,
    params={
        "start": UTC_TIME,
        "end": UTC_TIME,
        "capacity": {"type": "integer", "minimum": 1, "description": "Seats needed (the meeting's headcount)."},
        "equipment": {"type": "array", "items": {"type": "string", "enum": EQUIPMENT}, "uniqueItems": True,
                      "description": "Equipment the room must have."},
        "office": {**ZONE, "description": "Only rooms in this office (zone code)."},
    },
    optional=("equipment", "office"),
)
def find_available_room(db, start, end, capacity, equipment=None, office=None):
    """Rooms free for the whole UTC interval [start, end) with at least `capacity` seats and all
    the requested equipment, smallest fitting room first (then by id)."""
    s, e = _parse(start), _parse(end)
    if e <= s:
        raise ToolError(f"the end {end} must be after the start {start}")
    need = set(equipment or [])
    rooms = []
    for rid, r in sorted(db["rooms"].items(), key=lambda kv: (kv[1]["capacity"], kv[0])):
        if office is not None and r["office"] != office:
            continue
        if r["capacity"] < capacity or not need <= set(r["equipment"]):
            continue
        if _room_busy(db, rid, s, e) is None:
            rooms.append({"room_id": rid, **r})
    return {"start": start, "end": end, "rooms": rooms}


@tools.tool(
    read_only=True,
    params={"time": ANY_TIME, "from_zone": ZONE, "to_zone": ZONE},
)
def convert_time(db, time, from_zone, to_zone):
    """Convert a wall-clock time from one zone to another using the fixed offsets of the zone
    table (e.g. a UTC event start into the requester's local time). Returns the converted time
    and its weekday."""
    moment = _parse(time)
    converted = moment - _dt.timedelta(minutes=_offset(db, from_zone)) + _dt.timedelta(minutes=_offset(db, to_zone))
    return {"time": _fmt(converted), "zone": to_zone, "weekday": _WEEKDAY_NAMES[converted.weekday()],
            "from": {"time": time, "zone": from_zone}}


# -- write tools ------------------------------------------------------------------------------
@tools.tool(
    read_only=False,
    params={
        "title": {"type": "string", "minLength": 1, "maxLength": 120},
        "organizer": {**EMAIL, "description": "The requester's company email; they are added as an attendee."},
        "attendees": {"type": "array", "items": EMAIL, "uniqueItems": True,
                      "description": "Everyone else invited: company emails, or external guests' emails."},
        "start": UTC_TIME,
        "end": UTC_TIME,
        "room_id": {**ROOM_ID, "description": "Optionally book this room at the same time."},
    },
    optional=("room_id",),
)
def create_event(db, title, organizer, attendees, start, end, room_id=None):
    """Create a confirmed event (UTC times). Checks first, and changes nothing if a check fails:
    every company attendee (organizer included) must exist, be inside their working hours and
    be free (no other event, not out of office); external guests (non-company emails) are
    added as guests; the room, if given, must be free and seat everyone. Returns the new event."""
    s, e = _interval(db, start, end)
    org = organizer.strip().lower()
    _person(db, org)
    emails = _norm_emails(attendees)
    internal = sorted({org} | {m for m in emails if _is_internal(m)})
    guests = sorted({m for m in emails if not _is_internal(m)})
    for email in internal:
        _person(db, email)
    for email in internal:
        _check_attendee(db, email, s, e)
    if room_id is not None:
        room = _room(db, room_id)
        count = len(internal) + len(guests)
        if room["capacity"] < count:
            raise ToolError(f"room {room_id} seats {room['capacity']}, the meeting has {count} people")
        busy = _room_busy(db, room_id, s, e)
        if busy:
            raise ToolError(busy)
    event_id = new_id(db, "event", "EV")
    event = {"id": event_id, "title": " ".join(title.split()), "organizer": org, "attendees": internal,
             "guests": guests, "start": start, "end": end, "room": room_id, "status": "confirmed"}
    db["events"][event_id] = event
    return _event_view(event)


@tools.tool(read_only=False, params={"event_id": EVENT_ID, "email": {**EMAIL, "description": "A company email, or an external guest's email."}})
def invite(db, event_id, email):
    """Add one person to an event. A company person must be inside their working hours and free
    at the event's time; an external (non-company) email is added as a guest. The event's room,
    if any, must still seat everyone. Changes nothing if a check fails."""
    event = _live_event(db, event_id)
    email = email.strip().lower()
    if email in event["attendees"] or email in event["guests"]:
        raise ToolError(f"{email} is already on {event_id}")
    s, e = _event_span(event)
    if _is_internal(email):
        _person(db, email)
        _check_attendee(db, email, s, e, ignore=event_id)
    if event["room"] is not None:
        capacity = db["rooms"][event["room"]]["capacity"]
        if _headcount(event) + 1 > capacity:
            raise ToolError(f"room {event['room']} seats {capacity} and {event_id} already has {_headcount(event)} people; book a bigger room first")
    key = "attendees" if _is_internal(email) else "guests"
    event[key] = sorted(event[key] + [email])
    return {"event_id": event_id, "added": email, "as": "attendee" if key == "attendees" else "guest", "headcount": _headcount(event)}


@tools.tool(read_only=False, params={"event_id": EVENT_ID, "email": EMAIL})
def remove_attendee(db, event_id, email):
    """Remove one attendee or guest from an event (the organizer cannot be removed: cancel the
    event instead). Also how an attendee declines an event."""
    event = _live_event(db, event_id)
    email = email.strip().lower()
    if email == event["organizer"]:
        raise ToolError(f"{email} organizes {event_id} and cannot be removed; cancel the event instead")
    for key in ("attendees", "guests"):
        if email in event[key]:
            event[key] = [m for m in event[key] if m != email]
            return {"event_id": event_id, "removed": email, "headcount": _headcount(event)}
    raise ToolError(f"{email} is not on {event_id}")


@tools.tool(read_only=False, params={"event_id": EVENT_ID, "new_start": UTC_TIME, "new_end": UTC_TIME})
def reschedule_event(db, event_id, new_start, new_end):
    """Move an event to a new UTC time (its attendees, guests and room stay). Every company
    attendee must be inside working hours and free at the new time, and the room (if any) must be
    free then; otherwise nothing changes (release or change the room first if only the room is
    the problem)."""
    event = _live_event(db, event_id)
    s, e = _interval(db, new_start, new_end)
    if (new_start, new_end) == (event["start"], event["end"]):
        raise ToolError(f"{event_id} is already at {new_start}-{new_end}")
    for email in event["attendees"]:
        _check_attendee(db, email, s, e, ignore=event_id)
    if event["room"] is not None:
        busy = _room_busy(db, event["room"], s, e, ignore=event_id)
        if busy:
            raise ToolError(busy + "; release or change the room first")
    previous = {"start": event["start"], "end": event["end"]}
    event["start"], event["end"] = new_start, new_end
    return {"event_id": event_id, "previous": previous, "start": new_start, "end": new_end}


@tools.tool(read_only=False, params={"event_id": EVENT_ID})
def cancel_event(db, event_id):
    """Cancel an event: its status becomes 'cancelled', its room is freed and every attendee and
    guest is notified. Cannot be undone."""
    event = _live_event(db, event_id)
    event["status"] = "cancelled"
    notified = [m for m in event["attendees"] + event["guests"] if m != event["organizer"]]
    return {"event_id": event_id, "status": "cancelled", "notified": notified}


@tools.tool(read_only=False, params={"event_id": EVENT_ID, "room_id": ROOM_ID})
def book_room(db, event_id, room_id):
    """Book a room for an event at the event's time (replacing the event's current room, if any).
    The room must be free for the whole event and seat its headcount."""
    event = _live_event(db, event_id)
    room = _room(db, room_id)
    if event["room"] == room_id:
        raise ToolError(f"{event_id} already has room {room_id}")
    if room["capacity"] < _headcount(event):
        raise ToolError(f"room {room_id} seats {room['capacity']}, {event_id} has {_headcount(event)} people")
    busy = _room_busy(db, room_id, *_event_span(event), ignore=event_id)
    if busy:
        raise ToolError(busy)
    previous = event["room"]
    event["room"] = room_id
    return {"event_id": event_id, "room": room_id, "previous_room": previous}


@tools.tool(read_only=False, params={"event_id": EVENT_ID})
def release_room(db, event_id):
    """Release the room booked for an event (the event itself stays)."""
    event = _live_event(db, event_id)
    if event["room"] is None:
        raise ToolError(f"{event_id} has no room booked")
    previous = event["room"]
    event["room"] = None
    return {"event_id": event_id, "released": previous}

