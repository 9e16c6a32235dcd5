//! restic's durations for the `--keep-within*` rules: `1y2m3d4h` (years, months, days, hours),
//! counted back from the newest backup on its calendar, as restic's `AddDate` counts them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone};
use serde::{Serialize, Serializer};

/// A calendar span. Zero (every part 0) turns its rule off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    pub fn days(days: u32) -> Span {
        Span {
            days,
            ..Span::default()
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// `from` moved back by this span as restic does it (Go's `AddDate` on the wall clock, then
    /// the hours): months carry into years, days into months, so one month before March 31 is
    /// March 3 (February 31st, normalized). `None` past chrono's range.
    pub fn back_from<Tz: TimeZone>(&self, from: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let wall = from.naive_local();
        let months = i64::from(wall.year()) * 12 + i64::from(wall.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let first = NaiveDate::from_ymd_opt(
            i32::try_from(months.div_euclid(12)).ok()?,
            u32::try_from(months.rem_euclid(12)).ok()? + 1,
            1,
        )?;
        let day = first.checked_add_signed(TimeDelta::try_days(
            i64::from(wall.day()) - 1 - i64::from(self.days),
        )?)?;
        let naive = day.and_time(wall.time());
        let zone = from.timezone();
        // A wall time skipped by a DST change exists an hour later.
        let moved = zone.from_local_datetime(&naive).earliest().or_else(|| {
            zone.from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })?;
        moved.checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)
    }
}

/// As restic writes it (`1y2m3d4h`, zero parts left out); `0` when zero.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// restic's syntax (`1y2m3d4h`, any parts, in any order), or a bare number of days (what
/// `--keep-within DAYS` took before). Negative numbers and a unit given twice are refused.
impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty: give a duration such as `7d` or `1y2m3d4h`".to_string());
        }
        if text.starts_with('-') {
            return Err(format!(
                "`{text}` is negative: a duration counts back from the newest backup, give it as `7d` or `1y2m3d4h`"
            ));
        }
        if let Ok(days) = text.parse::<u32>() {
            return Ok(Span::days(days));
        }
        let mut span = Span::default();
        let mut seen = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (number, tail) = rest.split_at(digits);
            let Some(unit) = tail.chars().next() else {
                return Err(format!(
                    "`{text}`: no unit after `{number}`; the units are y, m, d and h (`1y2m3d4h`)"
                ));
            };
            if number.is_empty() {
                return Err(format!(
                    "`{text}`: `{unit}` has no number before it; write durations as `1y2m3d4h`"
                ));
            }
            let n: u32 = number
                .parse()
                .map_err(|_| format!("`{text}`: `{number}` is too large"))?;
            let part = match unit {
                'y' => &mut span.years,
                'm' => &mut span.months,
                'd' => &mut span.days,
                'h' => &mut span.hours,
                other => {
                    return Err(format!(
                        "`{text}`: `{other}` is not a unit; the units are y (years), m (months), d (days) and h (hours)"
                    ))
                }
            };
            if seen.contains(unit) {
                return Err(format!(
                    "`{text}` gives `{unit}` twice; give each unit once, as in `1y2m3d4h`"
                ));
            }
            seen.push(unit);
            *part = n;
            rest = &tail[unit.len_utf8()..];
        }
        Ok(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str) -> Span {
        text.parse().unwrap()
    }

    #[test]
    fn parses_restic_durations_and_bare_days() {
        assert_eq!(
            span("1y2m3d4h"),
            Span {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(
            span("1y1d1m"),
            Span {
                years: 1,
                months: 1,
                days: 1,
                hours: 0
            }
        );
        assert_eq!(span("30"), Span::days(30));
        assert_eq!(span(" 13d23h "), span("23h13d"));
        assert!(span("0").is_zero() && span("0d").is_zero());
        assert_eq!(span("1y1d1m").to_string(), "1y1m1d");
        assert_eq!(span("48h").to_string(), "48h");
        assert_eq!(span("0d").to_string(), "0");
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for (text, says) in [
            ("", "empty"),
            ("-1d", "negative"),
            ("1w", "`w` is not a unit"),
            ("3d2", "no unit after `2`"),
            ("d", "no number before it"),
            ("1d2d", "twice"),
            ("99999999999d", "too large"),
        ] {
            let error = text.parse::<Span>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn counts_back_on_the_calendar_as_go_adddate() {
        let at = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
        };
        let back = |from: &str, by: &str| span(by).back_from(&at(from)).unwrap();
        assert_eq!(back("2016-03-31 10:00:00", "1m"), at("2016-03-02 10:00:00"));
        assert_eq!(
            back("2016-01-18 12:02:03", "1y2m3d3h"),
            at("2014-11-15 09:02:03")
        );
        assert_eq!(
            back("2016-03-01 00:30:00", "1d1h"),
            at("2016-02-28 23:30:00")
        );
        assert_eq!(
            back("2016-01-01 00:00:00", "13m"),
            at("2014-12-01 00:00:00")
        );
        assert_eq!(back("2016-01-01 00:00:00", "0"), at("2016-01-01 00:00:00"));
    }
}
