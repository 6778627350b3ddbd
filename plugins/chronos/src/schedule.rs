//! Chronos schedules: ISO 8601 repeating intervals `R[n]/<start>/<period>`
//! in a time zone.
//!
//! Occurrence k of a schedule is `start + k × period`, computed in the
//! schedule's zone with calendar arithmetic (jiff): `P1D` from 09:00 in
//! `Europe/Berlin` stays at 09:00 across daylight-saving changes, `P1M`
//! from January 31st lands on the last day of February. `R` alone repeats
//! forever, `Rn` n more times, `R0` never.
//!
//! Chronos reinterprets the start's wall-clock fields in `scheduleTimeZone`
//! when one is given (the offset written in the start is then ignored);
//! without one, the start's own offset (or UTC) is its zone. An empty start
//! means "now". Unknown zones are refused here, where Chronos silently
//! used GMT: a job meant for 09:00 in Chicago should not quietly run at
//! 09:00 UTC.

use jiff::fmt::temporal::Pieces;
use jiff::tz::{Offset, TimeZone};
use jiff::{Span, SpanTotal, Timestamp, Unit, ZonedDateTime as Zoned};

/// A parsed schedule: the next occurrence and what follows it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Occurrences left: None repeats forever.
    pub repeat: Option<u64>,
    /// The next occurrence, in the schedule's zone.
    pub start: Zoned,
    pub period: Span,
    /// The period as written (upper case), shown back to clients.
    pub period_text: String,
}

/// The earliest start Chronos accepts.
const EARLIEST_MS: i64 = 1000;

impl Schedule {
    /// Parses `R[n]/<start>/<period>`; `time_zone` (a tz database name, or
    /// "" for the start's own offset) is the zone occurrences are computed
    /// in. `now_ms` stands in for an empty start.
    pub fn parse(text: &str, time_zone: &str, now_ms: u64) -> Result<Schedule, String> {
        let bad = || {
            format!(
                "Cannot parse schedule '{text}': expected R[n]/<ISO 8601 start>/<ISO 8601 period>, e.g. R/2026-01-01T09:00:00Z/PT1H"
            )
        };
        let mut parts = text.trim().splitn(3, '/');
        let (Some(r), Some(start), Some(period)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let repeat = match r.strip_prefix('R').or_else(|| r.strip_prefix('r')) {
            Some("") => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| bad())?),
            None => return Err(bad()),
        };
        let period_text = period.trim().to_ascii_uppercase();
        let period: Span = period_text
            .parse()
            .map_err(|e| format!("Cannot parse schedule '{text}': period {period:?}: {e}"))?;
        if period.is_negative() || period.is_zero() {
            return Err(format!(
                "Cannot parse schedule '{text}': the period must be longer than zero"
            ));
        }
        let zone = zone_named(time_zone)?;
        let start = if start.trim().is_empty() {
            // Chronos: an empty start is "now" (minus a second: run at once).
            let now = ms_to_timestamp(now_ms.saturating_sub(1000))?;
            now.to_zoned_datetime(zone.unwrap_or(TimeZone::UTC))
        } else {
            parse_start(start.trim(), zone)
                .map_err(|e| format!("Cannot parse schedule '{text}': start {start:?}: {e}"))?
        };
        if start.timestamp().as_millisecond() < EARLIEST_MS {
            return Err(format!(
                "Scheduled start date '{start}' is before 1970!",
                start = format_start(&start)
            ));
        }
        // A period that could never advance (e.g. a zero-length one in
        // disguise) would loop forever.
        let next = start
            .checked_add(period)
            .map_err(|e| format!("Cannot parse schedule '{text}': {e}"))?;
        if next.timestamp() <= start.timestamp() {
            return Err(format!(
                "Cannot parse schedule '{text}': the period must move time forward"
            ));
        }
        Ok(Schedule {
            repeat,
            start,
            period,
            period_text,
        })
    }

    /// The schedule as Chronos writes it back: `R9/2014-03-08T22:00:00.000Z/PT2H`.
    pub fn canonical(&self) -> String {
        let r = match self.repeat {
            Some(n) => format!("R{n}"),
            None => "R".to_string(),
        };
        format!("{r}/{}/{}", format_start(&self.start), self.period_text)
    }

    /// The next occurrence in Unix milliseconds, if any remain.
    pub fn next_ms(&self) -> Option<u64> {
        if self.repeat == Some(0) {
            return None;
        }
        u64::try_from(self.start.timestamp().as_millisecond()).ok()
    }

    /// Occurrence `k` (0 is `start`).
    fn occurrence(&self, k: i64) -> Option<Zoned> {
        let span = self.period.checked_mul(k).ok()?;
        self.start.checked_add(span).ok()
    }

    /// How many occurrences lie at or before `now_ms`, counting `start`.
    fn occurrences_until(&self, now_ms: u64) -> i64 {
        let now = now_ms as i64;
        let at = |z: &Zoned| z.timestamp().as_millisecond();
        if at(&self.start) > now {
            return 0;
        }
        // Estimate with the first period's length, then walk to the exact
        // answer (calendar periods vary by a few days at most).
        let len = self
            .period
            .total(SpanTotal::from(Unit::Millisecond).days_are_24_hours())
            .ok()
            .or_else(|| self.period.total((Unit::Millisecond, &self.start)).ok())
            .unwrap_or(1.0)
            .max(1.0);
        let mut k = (((now - at(&self.start)) as f64) / len).floor() as i64;
        k = k.max(0);
        while k > 0 && self.occurrence(k).is_none_or(|z| at(&z) > now) {
            k -= 1;
        }
        while self.occurrence(k + 1).is_some_and(|z| at(&z) <= now) {
            k += 1;
        }
        k + 1
    }

    /// Moves the schedule past `now_ms` after a run was started for its
    /// latest due occurrence (Chronos 3.x: missed occurrences coalesce into
    /// that one run; a finite count drops by one). Returns the instant the
    /// run stands for: the latest occurrence at or before `now_ms`.
    pub fn coalesce_past(&mut self, now_ms: u64) -> Option<u64> {
        self.next_ms()?;
        let n = self.occurrences_until(now_ms);
        if n == 0 {
            return None;
        }
        let due = self.occurrence(n - 1)?;
        self.start = self.occurrence(n)?;
        if let Some(r) = &mut self.repeat {
            *r -= 1;
        }
        u64::try_from(due.timestamp().as_millisecond()).ok()
    }

    /// Chronos 2.x: occurrences older than `now_ms - epsilon_ms` are
    /// skipped (each uses up one repetition); returns how many were skipped
    /// and, if the next one is due now (within epsilon), its instant, with
    /// the schedule moved past it.
    pub fn skip_past(&mut self, now_ms: u64, epsilon_ms: u64) -> (u64, Option<u64>) {
        let Some(next) = self.next_ms() else {
            return (0, None);
        };
        if next > now_ms {
            return (0, None);
        }
        let cutoff = now_ms.saturating_sub(epsilon_ms);
        let mut skipped = 0;
        if next < cutoff {
            // Every occurrence before the cutoff is skipped.
            let mut n = self.occurrences_until(cutoff - 1).max(0) as u64;
            if let Some(r) = self.repeat {
                n = n.min(r);
            }
            if let Some(z) = self.occurrence(n as i64) {
                self.start = z;
            }
            if let Some(r) = &mut self.repeat {
                *r -= n;
            }
            skipped = n;
        }
        match self.next_ms() {
            Some(next) if next <= now_ms => {
                if let Some(z) = self.occurrence(1) {
                    self.start = z;
                }
                if let Some(r) = &mut self.repeat {
                    *r -= 1;
                }
                (skipped, Some(next))
            }
            _ => (skipped, None),
        }
    }

    /// Whether `other` describes the same series of instants from this
    /// schedule's next occurrence on (a job posted again unchanged, or with
    /// its original start in the past): same period and zone, and this
    /// schedule's next occurrence is one of `other`'s.
    pub fn same_series(&self, other: &Schedule) -> bool {
        if self.period != jiff::SpanFieldwise(other.period)
            || self.start.time_zone() != other.start.time_zone()
            || self.repeat.is_none() != other.repeat.is_none()
        {
            return false;
        }
        let Some(mine) = self.next_ms() else {
            return false;
        };
        if other.next_ms() == Some(mine) {
            return true;
        }
        let n = other.occurrences_until(mine);
        n > 0
            && other
                .occurrence(n - 1)
                .is_some_and(|z| z.timestamp().as_millisecond() == mine as i64)
    }
}

/// The zone a tz database name means ("" for none). Java's three-letter
/// ids that Chronos users write (`PST`, `EST`, ...) mean what the JDK's
/// `ZoneId.SHORT_IDS` says.
pub fn zone_named(name: &str) -> Result<Option<TimeZone>, String> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.eq_ignore_ascii_case("UTC") || name.eq_ignore_ascii_case("GMT") || name == "Z" {
        return Ok(Some(TimeZone::UTC));
    }
    let alias = JAVA_SHORT_IDS
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map(|(_, long)| *long);
    if let Some(fixed) = alias.and_then(|l| l.strip_prefix("fixed:")) {
        let hours: i8 = fixed.parse().unwrap_or(0);
        return Ok(Some(TimeZone::fixed(
            Offset::from_hours(hours).unwrap_or(Offset::UTC),
        )));
    }
    TimeZone::get(alias.unwrap_or(name)).map(Some).map_err(|_| {
        format!("scheduleTimeZone {name:?} is not a time zone of the tz database (e.g. America/Chicago, Europe/Berlin, UTC)")
    })
}

/// Java's `ZoneId.SHORT_IDS`, which Chronos (a JVM program) accepted.
const JAVA_SHORT_IDS: &[(&str, &str)] = &[
    ("ACT", "Australia/Darwin"),
    ("AET", "Australia/Sydney"),
    ("AGT", "America/Argentina/Buenos_Aires"),
    ("ART", "Africa/Cairo"),
    ("AST", "America/Anchorage"),
    ("BET", "America/Sao_Paulo"),
    ("BST", "Asia/Dhaka"),
    ("CAT", "Africa/Harare"),
    ("CNT", "America/St_Johns"),
    ("CST", "America/Chicago"),
    ("CTT", "Asia/Shanghai"),
    ("EAT", "Africa/Addis_Ababa"),
    ("ECT", "Europe/Paris"),
    ("IET", "America/Indiana/Indianapolis"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("MIT", "Pacific/Apia"),
    ("NET", "Asia/Yerevan"),
    ("NST", "Pacific/Auckland"),
    ("PLT", "Asia/Karachi"),
    ("PNT", "America/Phoenix"),
    ("PRT", "America/Puerto_Rico"),
    ("PST", "America/Los_Angeles"),
    ("SST", "Pacific/Guadalcanal"),
    ("VST", "Asia/Ho_Chi_Minh"),
    ("EST", "fixed:-5"),
    ("MST", "fixed:-7"),
    ("HST", "fixed:-10"),
];

/// Parses a start: its wall-clock fields in `zone` when given, else in its
/// own offset (UTC when it has none).
fn parse_start(text: &str, zone: Option<TimeZone>) -> Result<Zoned, String> {
    let pieces = Pieces::parse(text).map_err(|e| e.to_string())?;
    let civil = pieces
        .date()
        .to_datetime(pieces.time().unwrap_or(jiff::civil::Time::midnight()));
    let tz = match zone {
        Some(z) => z,
        None => match pieces.to_numeric_offset() {
            Some(o) if o == Offset::UTC => TimeZone::UTC,
            Some(o) => TimeZone::fixed(o),
            None => TimeZone::UTC,
        },
    };
    civil.to_zoned_datetime(tz).map_err(|e| e.to_string())
}

/// A start as Chronos (Joda) prints it: milliseconds and `Z` for UTC, else
/// the offset.
pub fn format_start(z: &Zoned) -> String {
    if z.offset() == Offset::UTC {
        z.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
    }
}

fn ms_to_timestamp(ms: u64) -> Result<Timestamp, String> {
    Timestamp::from_millisecond(ms as i64).map_err(|e| e.to_string())
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ` in UTC, Chronos' timestamp format.
pub fn iso_ms(ms: u64) -> String {
    match ms_to_timestamp(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::new(),
    }
}

/// `MM/dd/yy HH:mm:ss` in UTC (Chronos' task history times).
pub fn short_time(ms: u64) -> String {
    match ms_to_timestamp(ms) {
        Ok(t) => t.strftime("%m/%d/%y %H:%M:%S").to_string(),
        Err(_) => "N/A".into(),
    }
}

/// A compact, sortable run id from an instant: `20261202T093000.000Z`.
pub fn run_id(ms: u64) -> String {
    match ms_to_timestamp(ms) {
        Ok(t) => t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string(),
        Err(_) => ms.to_string(),
    }
}

/// Parses an ISO 8601 duration (`PT60S`) into milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let span: Span = text
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|e| format!("{text:?} is not an ISO 8601 duration such as PT60S: {e}"))?;
    let ms = span
        .total(SpanTotal::from(Unit::Millisecond).days_are_24_hours())
        .map_err(|e| format!("{text:?}: {e}"))?;
    if ms < 0.0 {
        return Err(format!("{text:?} is negative"));
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        s.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn schedules_parse_and_print_as_chronos_writes_them() {
        let s = Schedule::parse("R10/2014-03-08T20:00:00Z/PT2H", "", 0).unwrap();
        assert_eq!(s.repeat, Some(10));
        assert_eq!(s.canonical(), "R10/2014-03-08T20:00:00.000Z/PT2H");
        let s = Schedule::parse("R/2014-03-08T20:00:00.000-08:00/P1D", "", 0).unwrap();
        assert_eq!(s.repeat, None);
        assert_eq!(s.canonical(), "R/2014-03-08T20:00:00.000-08:00/P1D");
        assert_eq!(s.next_ms(), Some(ms("2014-03-09T04:00:00Z")));
        let s = Schedule::parse("R0/2014-01-01T00:00:00Z/PT60M", "", 0).unwrap();
        assert_eq!(s.next_ms(), None, "R0 never runs");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for bad in [
            "",
            "R/2014-01-01T00:00:00Z",
            "X/2014-01-01T00:00:00Z/PT1H",
            "Rx/2014-01-01T00:00:00Z/PT1H",
            "R/yesterday/PT1H",
            "R/2014-01-01T00:00:00Z/1H",
            "R/2014-01-01T00:00:00Z/PT0S",
        ] {
            let e = Schedule::parse(bad, "", 0).unwrap_err();
            assert!(e.starts_with("Cannot parse schedule"), "{bad}: {e}");
        }
        let e = Schedule::parse("R/1969-12-31T00:00:00Z/PT1H", "", 0).unwrap_err();
        assert!(e.contains("before 1970"), "{e}");
        let e = Schedule::parse("R/2014-01-01T00:00:00Z/PT1H", "Mars/Olympus", 0).unwrap_err();
        assert!(e.contains("scheduleTimeZone"), "{e}");
    }

    #[test]
    fn a_time_zone_reinterprets_the_start_and_keeps_wall_clock_across_dst() {
        // 09:00 in Chicago, whatever offset the start was written with.
        let s = Schedule::parse("R/2026-03-07T09:00:00Z/P1D", "America/Chicago", 0).unwrap();
        assert_eq!(
            s.next_ms(),
            Some(ms("2026-03-07T15:00:00Z")),
            "CST is UTC-6"
        );
        assert_eq!(s.canonical(), "R/2026-03-07T09:00:00.000-06:00/P1D");
        // DST starts on March 8th 2026: the next day's 09:00 is UTC-5.
        let mut s2 = s.clone();
        assert_eq!(
            s2.coalesce_past(ms("2026-03-07T15:00:01Z")),
            Some(ms("2026-03-07T15:00:00Z"))
        );
        assert_eq!(s2.next_ms(), Some(ms("2026-03-08T14:00:00Z")));
        // Java's short ids.
        let pst = Schedule::parse("R/2026-01-01T00:00:00Z/PT1H", "PST", 0).unwrap();
        assert_eq!(pst.next_ms(), Some(ms("2026-01-01T08:00:00Z")));
        let est = Schedule::parse("R/2026-07-01T00:00:00Z/PT1H", "EST", 0).unwrap();
        assert_eq!(
            est.next_ms(),
            Some(ms("2026-07-01T05:00:00Z")),
            "EST is a fixed -05:00"
        );
    }

    #[test]
    fn months_and_years_are_calendar_periods() {
        let mut s = Schedule::parse("R/2026-01-31T12:00:00Z/P1M", "", 0).unwrap();
        s.coalesce_past(ms("2026-01-31T12:00:00Z"));
        assert_eq!(s.next_ms(), Some(ms("2026-02-28T12:00:00Z")));
        let mut y = Schedule::parse("R/2024-02-29T00:00:00Z/P1Y", "", 0).unwrap();
        y.coalesce_past(ms("2024-03-01T00:00:00Z"));
        assert_eq!(y.next_ms(), Some(ms("2025-02-28T00:00:00Z")));
    }

    #[test]
    fn missed_occurrences_coalesce_into_one_run_and_use_one_repetition() {
        let mut s = Schedule::parse("R5/2026-01-01T00:00:00Z/PT10S", "", 0).unwrap();
        // 95 s late: the run stands for 00:01:30; the next is 00:01:40.
        let due = s.coalesce_past(ms("2026-01-01T00:01:35Z"));
        assert_eq!(due, Some(ms("2026-01-01T00:01:30Z")));
        assert_eq!(s.next_ms(), Some(ms("2026-01-01T00:01:40Z")));
        assert_eq!(s.repeat, Some(4));
        assert_eq!(
            s.coalesce_past(ms("2026-01-01T00:01:39Z")),
            None,
            "not due yet"
        );
        // Far in the past: no walking through every occurrence.
        let mut old = Schedule::parse("R/1990-01-01T00:00:00Z/PT1S", "", 0).unwrap();
        let now = ms("2026-01-01T00:00:00.500Z");
        assert_eq!(old.coalesce_past(now), Some(ms("2026-01-01T00:00:00Z")));
        assert_eq!(old.next_ms(), Some(ms("2026-01-01T00:00:01Z")));
    }

    #[test]
    fn epsilon_skips_occurrences_too_old_to_run() {
        let mut s = Schedule::parse("R/2026-01-01T00:00:00Z/PT10S", "", 0).unwrap();
        // 35 s late with a 15 s epsilon: 00, 10 are skipped; 20 runs.
        let (skipped, due) = s.skip_past(ms("2026-01-01T00:00:35Z"), 15_000);
        assert_eq!((skipped, due), (2, Some(ms("2026-01-01T00:00:20Z"))));
        assert_eq!(s.next_ms(), Some(ms("2026-01-01T00:00:30Z")));
        let (skipped, due) = s.skip_past(ms("2026-01-01T00:00:35Z"), 15_000);
        assert_eq!((skipped, due), (0, Some(ms("2026-01-01T00:00:30Z"))));
        assert_eq!(s.skip_past(ms("2026-01-01T00:00:35Z"), 15_000), (0, None));
    }

    #[test]
    fn an_empty_start_means_now() {
        let now = ms("2026-05-05T10:00:00Z");
        let s = Schedule::parse("R1//PT24H", "", now).unwrap();
        assert!(s.next_ms().unwrap() <= now);
    }

    #[test]
    fn the_same_series_posted_again_is_recognised() {
        let mut s = Schedule::parse("R/2026-01-01T00:00:00Z/PT1H", "", 0).unwrap();
        s.coalesce_past(ms("2026-01-01T05:30:00Z"));
        let again = Schedule::parse("R/2026-01-01T00:00:00Z/PT1H", "", 0).unwrap();
        assert!(s.same_series(&again));
        let shifted = Schedule::parse("R/2026-01-01T00:15:00Z/PT1H", "", 0).unwrap();
        assert!(!s.same_series(&shifted));
        let other = Schedule::parse("R/2026-01-01T00:00:00Z/PT2H", "", 0).unwrap();
        assert!(!s.same_series(&other));
    }

    #[test]
    fn times_print_in_chronos_formats() {
        let t = ms("2014-03-08T16:57:17.507Z");
        assert_eq!(iso_ms(t), "2014-03-08T16:57:17.507Z");
        assert_eq!(short_time(t), "03/08/14 16:57:17");
        assert_eq!(run_id(t), "20140308T165717.507Z");
        assert_eq!(duration_ms("PT60S").unwrap(), 60_000);
        assert!(duration_ms("60").is_err());
    }
}
