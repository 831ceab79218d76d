# Time windows.
#
# A grant may apply only at some hours ("hours_utc": [from, to], to
# exclusive, wrapping past midnight when from > to) and on some days
# ("weekdays": ["Monday", ...]), both in UTC and judged on the request time,
# never on OPA's clock.
#
# Package annotations (title, input schema) are in authz.rego.
package regate.authz

# METADATA
# description: >-
#   Unexpired grants match caller, agent and tool, but the request time is
#   outside all their time windows, and no other matching grant applies.
# custom:
#   code: outside_time_window
_outside_time_window := {
	"code": rego.metadata.rule().custom.code,
	"message": sprintf(
		"caller %q may call tool %q of agent %q only in its grants' time windows (%s); the request time %s is outside them",
		[_caller, _tool, _agent, concat("; ", _closed_windows), input.request.time],
	),
} if {
	count(_closed_windows) > 0
}

# The windows (as JSON) of the unexpired matching grants that are closed now.
_closed_windows contains json.marshal(object.filter(grant, ["hours_utc", "weekdays"])) if {
	_now_ns
	some grant in _matching_grants
	_unexpired(grant)
	not _in_window(grant)
}

# A grant without "hours_utc" or "weekdays" is open at all hours or days.
_in_window(grant) if {
	_in_hours(object.get(grant, "hours_utc", [0, 24]), _hour_utc)
	_on_day(object.get(grant, "weekdays", null), _weekday_utc)
}

_in_hours([from, to], hour) if {
	from <= to
	from <= hour
	hour < to
}

# A window past midnight, e.g. [22, 6]: open from 22:00 to 06:00.
_in_hours([from, to], hour) if {
	from > to
	hour >= from
}

_in_hours([from, to], hour) if {
	from > to
	hour < to
}

_on_day(null, _)

_on_day(days, day) if day in days

# The hour of the request time in UTC, with minutes and seconds as a
# fraction, so that "hours_utc": [8.5, 17] opens at 08:30.
_hour_utc := (hour + (minute / 60)) + (second / 3600) if {
	[hour, minute, second] := time.clock([_now_ns, "UTC"])
}

_weekday_utc := time.weekday([_now_ns, "UTC"])
