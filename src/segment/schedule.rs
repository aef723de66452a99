//! Refresh schedules: intervals (`'15 minutes'`, humantime syntax, no months or years, at least a
//! second) and five-field cron expressions (croner) in UTC or a named time zone. Pure logic: the
//! scheduler asks for the fire times around a moment.
//!
//! Interval schedules are aligned to the Unix epoch (UTC): `EVERY '1 hour'` fires at every full
//! hour, `EVERY '15 minutes'` at :00, :15, :30 and :45, `EVERY '1 day'` at UTC midnight — the same
//! slots in every process, so two servers on one database compete for the same refresh.

use chrono::{DateTime, TimeZone, Utc};

use super::ast::Refresh;

/// Parse an interval into microseconds.
pub fn parse_interval(s: &str) -> Result<i64, String> {
    let t = s.trim();
    // The unit words, with humantime's case-sensitive `M` (months) kept apart from `m`.
    let words: Vec<String> = t
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w == "M" {
                w.to_string()
            } else {
                w.to_ascii_lowercase()
            }
        })
        .collect();
    let calendar = [
        "month", "months", "mon", "M", "year", "years", "y", "yr", "yrs",
    ];
    if words.iter().any(|w| calendar.contains(&w.as_str())) {
        return Err(format!(
            "interval '{s}': months and years have no fixed length; use days or weeks, or REFRESH CRON"
        ));
    }
    let t = t
        .replace("milliseconds", "ms")
        .replace("millisecond", "ms")
        .replace("microseconds", "us")
        .replace("microsecond", "us");
    let d = humantime::parse_duration(&t).map_err(|e| {
        format!("interval '{s}' is not valid ({e}); write it like '30 seconds', '15 minutes', '1 hour', '1 day' or '1 week'")
    })?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!(
            "interval '{s}' is under a second; the shortest refresh interval is '1 second'"
        ));
    }
    i64::try_from(d.as_micros()).map_err(|_| format!("interval '{s}' is too long"))
}

/// A parsed cron schedule.
pub struct Cron {
    cron: croner::Cron,
    tz: Option<chrono_tz::Tz>,
}

/// Parse a five-field cron expression with an optional IANA time zone.
pub fn parse_cron(expr: &str, tz: Option<&str>) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron '{expr}' has {fields} fields; segdb takes the standard five (minute hour day-of-month month day-of-week), e.g. '0 6 * * 1'"
        ));
    }
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build();
    let cron = parser.parse(expr).map_err(|e| match field_error(expr) {
        Some(why) => format!("cron '{expr}' is not valid: {why}"),
        None => format!("cron '{expr}' is not valid: {e}"),
    })?;
    let tz = match tz {
        None => None,
        Some(z) => Some(z.parse::<chrono_tz::Tz>().map_err(|_| {
            format!("unknown time zone '{z}'; use an IANA name such as 'Europe/Berlin' or 'America/New_York'")
        })?),
    };
    Ok(Cron { cron, tz })
}

/// The five fields with the numbers each takes.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// Which field of a cron expression holds a number out of its range, said plainly (the
/// parser's own message does not name the field).
fn field_error(expr: &str) -> Option<String> {
    for (i, (field, (name, lo, hi))) in expr.split_whitespace().zip(FIELDS).enumerate() {
        for part in field.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, ""));
            if step.parse::<u32>() == Ok(0) {
                return Some(format!("field {} ({name}) has a step of 0", i + 1));
            }
            for n in range.split('-').filter_map(|x| x.parse::<u32>().ok()) {
                if n < lo || n > hi {
                    return Some(format!(
                        "field {} ({name}) has {n}; it takes {lo} to {hi}",
                        i + 1
                    ));
                }
            }
        }
    }
    None
}

/// How far ahead a schedule must fire at least once.
const HORIZON_YEARS: i64 = 5;

/// Check a cron schedule fires at all: `'0 6 30 2 *'` (30 February) parses but never fires.
fn fires_soon(expr: &str, c: &Cron, now: i64) -> Result<(), String> {
    let horizon = now + HORIZON_YEARS * 366 * 86_400_000_000;
    match c.next_after(now) {
        Some(t) if t <= horizon => Ok(()),
        _ => Err(format!(
            "cron '{expr}' never fires in the next {HORIZON_YEARS} years (a day that does not exist in its month?); check the day-of-month and month fields"
        )),
    }
}

/// Check a refresh clause (what CREATE / ALTER accept).
pub fn validate(r: &Refresh) -> Result<(), String> {
    match r {
        Refresh::Every(s, _) => parse_interval(s).map(|_| ()),
        Refresh::Cron { expr, tz } => {
            let c = parse_cron(expr, tz.as_deref())?;
            fires_soon(expr, &c, chrono::Utc::now().timestamp_micros())
        }
        Refresh::Manual | Refresh::Live => Ok(()),
    }
}

fn utc(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

impl Cron {
    fn next_after(&self, t: i64) -> Option<i64> {
        let next = match self.tz {
            None => self.cron.find_next_occurrence(&utc(t), false).ok()?,
            Some(z) => self
                .cron
                .find_next_occurrence(&z.from_utc_datetime(&utc(t).naive_utc()), false)
                .ok()?
                .with_timezone(&Utc),
        };
        Some(next.timestamp_micros())
    }

    fn last_at_or_before(&self, t: i64) -> Option<i64> {
        let prev = match self.tz {
            None => self.cron.find_previous_occurrence(&utc(t), true).ok()?,
            Some(z) => self
                .cron
                .find_previous_occurrence(&z.from_utc_datetime(&utc(t).naive_utc()), true)
                .ok()?
                .with_timezone(&Utc),
        };
        Some(prev.timestamp_micros())
    }
}

/// The latest fire time of `r` at or before `t` (epoch µs), if it ever fired.
pub fn last_fire(r: &Refresh, t: i64) -> Option<i64> {
    match r {
        Refresh::Every(_, step) if *step > 0 => Some(t.div_euclid(*step) * step),
        Refresh::Cron { expr, tz } => parse_cron(expr, tz.as_deref()).ok()?.last_at_or_before(t),
        _ => None,
    }
}

/// The first fire time of `r` strictly after `t`.
pub fn next_fire(r: &Refresh, t: i64) -> Option<i64> {
    match r {
        Refresh::Every(_, step) if *step > 0 => Some((t.div_euclid(*step) + 1) * step),
        Refresh::Cron { expr, tz } => parse_cron(expr, tz.as_deref()).ok()?.next_after(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn intervals_parse_and_refuse_what_has_no_fixed_length() {
        assert_eq!(parse_interval("30 seconds").unwrap(), 30_000_000);
        assert_eq!(parse_interval("15 minutes").unwrap(), 900_000_000);
        assert_eq!(parse_interval("1 hour").unwrap(), 3_600_000_000);
        assert_eq!(parse_interval("1 day").unwrap(), 86_400_000_000);
        assert_eq!(parse_interval("2 days").unwrap(), 2 * 86_400_000_000);
        assert!(
            parse_interval("500 milliseconds")
                .unwrap_err()
                .contains("under a second")
        );
        assert_eq!(parse_interval("1 week").unwrap(), 7 * 86_400_000_000);
        for bad in ["1 month", "2 years", "500ms", "0 seconds", "soon", ""] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_in_utc_and_in_a_time_zone() {
        let r = Refresh::Cron {
            expr: "0 6 * * *".into(),
            tz: None,
        };
        let t = ts("2026-03-10T07:30:00Z");
        assert_eq!(last_fire(&r, t), Some(ts("2026-03-10T06:00:00Z")));
        assert_eq!(next_fire(&r, t), Some(ts("2026-03-11T06:00:00Z")));
        let berlin = Refresh::Cron {
            expr: "0 6 * * *".into(),
            tz: Some("Europe/Berlin".into()),
        };
        // 06:00 in Berlin is 05:00 UTC in winter.
        assert_eq!(last_fire(&berlin, t), Some(ts("2026-03-10T05:00:00Z")));
        assert!(parse_cron("0 6 * *", None).is_err());
        assert!(parse_cron("0 0 6 * * *", None).is_err());
        assert!(parse_cron("61 * * * *", None).is_err());
        assert!(parse_cron("0 6 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let r = Refresh::Every("15 minutes".into(), 900_000_000);
        let t = ts("2026-03-10T07:31:12Z");
        assert_eq!(last_fire(&r, t), Some(ts("2026-03-10T07:30:00Z")));
        assert_eq!(next_fire(&r, t), Some(ts("2026-03-10T07:45:00Z")));
        assert_eq!(last_fire(&Refresh::Manual, t), None);
    }

    #[test]
    fn schedules_that_never_fire_or_are_out_of_range_are_refused_by_name() {
        let never = Refresh::Cron {
            expr: "0 6 30 2 *".into(),
            tz: None,
        };
        let e = validate(&never).unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        let leap = Refresh::Cron {
            expr: "0 6 29 2 *".into(),
            tz: None,
        };
        validate(&leap).unwrap();
        let e = parse_cron("0 25 * * *", None).err().unwrap();
        assert!(e.contains("field 2 (hour) has 25"), "{e}");
        let e = parse_cron("0 6 32 * *", None).err().unwrap();
        assert!(e.contains("field 3 (day of month)"), "{e}");
    }
}
