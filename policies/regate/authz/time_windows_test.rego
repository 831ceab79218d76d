package regate.authz_test

import data.regate.authz

_window_grants := [
	{"caller": "day", "agent_id": "reports", "tools": ["read"], "hours_utc": [8, 18]},
	{"caller": "night", "agent_id": "reports", "tools": ["read"], "hours_utc": [22, 6]},
	{"caller": "half", "agent_id": "reports", "tools": ["read"], "hours_utc": [8.5, 9]},
	{"caller": "weekday", "agent_id": "reports", "tools": ["read"], "weekdays": ["Monday", "Friday"]},
	{"caller": "both", "agent_id": "reports", "tools": ["read"], "hours_utc": [8, 18], "weekdays": ["Monday"]},
	{"caller": "never", "agent_id": "reports", "tools": ["read"], "hours_utc": [9, 9]},
	{"caller": "two", "agent_id": "reports", "tools": ["read"], "hours_utc": [8, 12]},
	{"caller": "two", "agent_id": "reports", "tools": ["read"], "hours_utc": [14, 18]},
	{
		"caller": "lapsed", "agent_id": "reports", "tools": ["read"],
		"hours_utc": [8, 18], "expires": "2026-01-01T00:00:00Z",
	},
	{"caller": "mixed", "agent_id": "reports", "tools": ["read"], "expires": "2026-01-01T00:00:00Z"},
	{"caller": "mixed", "agent_id": "reports", "tools": ["read"], "hours_utc": [8, 18]},
	{"caller": "broken", "agent_id": "reports", "tools": ["read"], "hours_utc": [8]},
	{"caller": "broken", "agent_id": "reports", "tools": ["write"], "weekdays": "Monday"},
]

# _input for caller reading a file at time t.
_at(caller, t) := _call(caller, "reports", "read", {"request": {"time": t}})

# 2026-11-23 is a Monday, 2026-11-24 a Tuesday.
test_time_windows[note] if {
	some note, [doc, code] in {
		"in hours": [_at("day", "2026-11-24T08:00:00Z"), "granted"],
		"last second in hours": [_at("day", "2026-11-24T17:59:59Z"), "granted"],
		"end is exclusive": [_at("day", "2026-11-24T18:00:00Z"), "outside_time_window"],
		"before": [_at("day", "2026-11-24T07:59:59Z"), "outside_time_window"],
		"judged in UTC": [_at("day", "2026-11-24T11:00:00+02:00"), "granted"],
		"judged in UTC, outside": [_at("day", "2026-11-24T09:30:00+02:00"), "outside_time_window"],
		"past midnight, late": [_at("night", "2026-11-24T23:00:00Z"), "granted"],
		"past midnight, early": [_at("night", "2026-11-24T05:59:00Z"), "granted"],
		"past midnight, daytime": [_at("night", "2026-11-24T12:00:00Z"), "outside_time_window"],
		"half hour, in": [_at("half", "2026-11-24T08:30:00Z"), "granted"],
		"half hour, before": [_at("half", "2026-11-24T08:29:59Z"), "outside_time_window"],
		"weekday": [_at("weekday", "2026-11-23T03:00:00Z"), "granted"],
		"other weekday": [_at("weekday", "2026-11-24T03:00:00Z"), "outside_time_window"],
		"weekday in UTC": [_at("weekday", "2026-11-22T23:30:00-01:00"), "granted"],
		"hours and day": [_at("both", "2026-11-23T09:00:00Z"), "granted"],
		"hours, wrong day": [_at("both", "2026-11-24T09:00:00Z"), "outside_time_window"],
		"day, wrong hours": [_at("both", "2026-11-23T19:00:00Z"), "outside_time_window"],
		"empty window": [_at("never", "2026-11-24T09:00:00Z"), "outside_time_window"],
		"second window": [_at("two", "2026-11-24T15:00:00Z"), "granted"],
		"between windows": [_at("two", "2026-11-24T13:00:00Z"), "outside_time_window"],
		"expired, in window": [_at("lapsed", "2026-11-24T09:00:00Z"), "grant_expired"],
		"expired, outside window": [_at("lapsed", "2026-11-24T20:00:00Z"), "grant_expired"],
		"one expired, one in window": [_at("mixed", "2026-11-24T09:00:00Z"), "granted"],
		"malformed hours never open": [_at("broken", "2026-11-24T09:00:00Z"), "outside_time_window"],
		"missing time": [json.remove(_input("day", "reports", "read"), ["request/time"]), "no_grant"],
	}
	d := authz.decision with input as doc
		with data.regate.grants as _by_agent(_window_grants)
		with data.regate.risk as {}
		with data.regate.arguments as {}
		with data.regate.rate_limits as {}
		with data.regate.limits as {}
		with data.regate.redact as {}
	_well_formed(d)
	_codes(d) == [code]
}

# One grant expired, the other outside its window: both reasons, sorted by code.
test_time_windows_and_expiry if {
	d := authz.decision with input as _at("mixed", "2026-11-24T20:00:00Z") with data.regate.grants as _by_agent(_window_grants)
	_codes(d) == ["grant_expired", "outside_time_window"]
}

test_time_windows_message if {
	d := authz.decision with input as _at("two", "2026-11-24T13:00:00Z") with data.regate.grants as _by_agent(_window_grants)
	d.reasons[0].message == concat("", [
		`caller "two" may call tool "read" of agent "reports" only in its grants' time windows `,
		`({"hours_utc":[14,18]}; {"hours_utc":[8,12]}); the request time 2026-11-24T13:00:00Z is outside them`,
	])
}

test_time_windows_malformed_weekdays if {
	d := authz.decision with input as _call("broken", "reports", "write", {"request": {"time": "2026-11-23T09:00:00Z"}})
		with data.regate.grants as _by_agent(_window_grants)
	_codes(d) == ["outside_time_window"]
}

# The shipped backup-bot grant: at night only, until mid-2027.
test_shipped_time_windows[note] if {
	acme := {"caller": {"claims": {"iss": "https://idp.acme.example"}}, "arguments": {"path": "/srv/shared/a"}}
	some note, [t, code] in {
		"at night": ["2026-11-24T23:00:00Z", "granted"],
		"in the day": ["2026-11-24T12:00:00Z", "outside_time_window"],
		"after it expired": ["2027-07-01T23:00:00Z", "grant_expired"],
	}
	d := authz.decision with input as _call("backup-bot", "files", "read", object.union(acme, {"request": {"time": t}}))
	_codes(d) == [code]
}

test_shipped_windows_well_formed[note] if {
	some agent_id, grants in data.regate.grants
	some i, grant in grants
	note := sprintf("%s %d %s", [agent_id, i, object.get(grant, "note", "")])
	_hours_well_formed(object.get(grant, "hours_utc", [0, 24]))
	every day in object.get(grant, "weekdays", []) {
		day in {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
	}
}

_hours_well_formed([from, to]) if {
	is_number(from)
	is_number(to)
	from >= 0
	from < 24
	to > 0
	to <= 24
	from != to
}
