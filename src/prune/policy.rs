//! Which backups the keep rules keep, as restic's `forget` decides (restic ≥ 0.16), measured from
//! the newest backup not dated in the future. Pure: the time zone and *now* are arguments.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Timelike};
use serde::{Serialize, Serializer};

use super::duration::Span;
use super::Candidate;

/// How many a counting rule keeps: `0` turns it off, `unlimited` keeps one per period forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    N(u32),
    Unlimited,
}

impl Count {
    fn is_on(self) -> bool {
        self != Count::N(0)
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::N(n) => write!(f, "{n}"),
            Count::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A number, or the string `unlimited`.
impl Serialize for Count {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::N(n) => serializer.serialize_u32(*n),
            Count::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

/// A count, or `unlimited`; negative numbers are refused, as restic ≥ 0.16 refuses them.
impl FromStr for Count {
    type Err = String;

    fn from_str(text: &str) -> Result<Count, String> {
        match text.trim() {
            "unlimited" => Ok(Count::Unlimited),
            t if t.starts_with('-') => Err(format!(
                "`{t}` is negative; `unlimited` keeps all (restic refuses negative counts too)"
            )),
            t => t
                .parse()
                .map(Count::N)
                .map_err(|_| format!("`{t}` is not a count: give a number, or `unlimited`")),
        }
    }
}

/// The calendar periods the counting rules keep one backup of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    /// Which period `t` falls in, as one number (restic's `ymdh`, `ymd`, ISO `yw`, `ym`, `y`).
    fn of<Tz: TimeZone>(self, t: &DateTime<Tz>) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => i64::from(t.iso_week().year()) * 100 + i64::from(t.iso_week().week()),
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }
}

/// The keep rules of one group of backups; `None` is a rule not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Policy {
    /// `within` is `backup.retention_days`, applied because no keep rule was given.
    pub default_applied: bool,
    /// Keep the newest N.
    pub last: Option<Count>,
    /// Keep the newest backup of each of the last N hours (days, ...) that have backups.
    pub hourly: Option<Count>,
    pub daily: Option<Count>,
    pub weekly: Option<Count>,
    pub monthly: Option<Count>,
    pub yearly: Option<Count>,
    /// Keep every backup made within this span before the newest backup.
    pub within: Option<Span>,
    /// Keep the newest backup of each hour (day, ...) within this span before the newest backup.
    pub within_hourly: Option<Span>,
    pub within_daily: Option<Span>,
    pub within_weekly: Option<Span>,
    pub within_monthly: Option<Span>,
    pub within_yearly: Option<Span>,
}

impl Policy {
    /// As restic's `forget`: the rules given replace the default; `retention_days` (as
    /// `within`, in days) applies only when no rule is given at all.
    pub fn or_default(self, retention_days: u32) -> Policy {
        if self.counts().iter().any(|(_, c)| c.is_some())
            || self.spans().iter().any(|(_, s)| s.is_some())
        {
            return self;
        }
        Policy {
            within: Some(Span::days(retention_days)),
            default_applied: true,
            ..self
        }
    }

    /// No rule keeps anything: only the newest valid backup would stay.
    pub fn is_empty(&self) -> bool {
        self.counts()
            .iter()
            .all(|(_, c)| !c.is_some_and(Count::is_on))
            && self
                .spans()
                .iter()
                .all(|(_, s)| s.is_none_or(|s| s.is_zero()))
    }

    /// The counting rules: `last` (`None` as the period), then each period's.
    pub fn counts(&self) -> [(Option<Period>, Option<Count>); 6] {
        [
            (None, self.last),
            (Some(Period::Hourly), self.hourly),
            (Some(Period::Daily), self.daily),
            (Some(Period::Weekly), self.weekly),
            (Some(Period::Monthly), self.monthly),
            (Some(Period::Yearly), self.yearly),
        ]
    }

    /// `within` (`None` as the period), then each period's `within_*`.
    pub fn spans(&self) -> [(Option<Period>, Option<Span>); 6] {
        [
            (None, self.within),
            (Some(Period::Hourly), self.within_hourly),
            (Some(Period::Daily), self.within_daily),
            (Some(Period::Weekly), self.within_weekly),
            (Some(Period::Monthly), self.within_monthly),
            (Some(Period::Yearly), self.within_yearly),
        ]
    }
}

/// Why a backup stays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The `rank`th newest (`--keep-last`).
    Last { rank: u32 },
    /// The newest of its period, the `rank`th such period; `oldest`: not the newest of its
    /// period, but the oldest backup, kept because the rule had room left (restic ≥ 0.16).
    Period {
        period: Period,
        rank: u32,
        oldest: bool,
    },
    /// Made within `span` before the newest backup; `default`: from `backup.retention_days`.
    Within { span: Span, default: bool },
    /// The newest of its period within `span` before the newest backup (or the oldest backup).
    PeriodWithin {
        period: Period,
        span: Span,
        oldest: bool,
    },
    /// Dated after now: kept, and counted by no rule.
    Future,
    /// The newest valid backup not dated in the future: never deleted.
    NewestValid,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let oldest = |oldest: bool| if oldest { " (the oldest backup)" } else { "" };
        match self {
            Reason::Last { rank } => write!(f, "last {rank}"),
            Reason::Period {
                period,
                rank,
                oldest: o,
            } => write!(f, "{} #{rank}{}", period.name(), oldest(*o)),
            Reason::Within { span, default } => write!(
                f,
                "within {span} of the newest{}",
                if *default {
                    " (`backup.retention_days`)"
                } else {
                    ""
                }
            ),
            Reason::PeriodWithin {
                period,
                span,
                oldest: o,
            } => write!(f, "{} within {span}{}", period.name(), oldest(*o)),
            Reason::Future => f.write_str("dated in the future"),
            Reason::NewestValid => f.write_str("the newest valid backup"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why each backup stays (empty: it goes), `candidates` in any order, their times read in
/// `zone`. Backups dated after `now` are kept and counted by no rule; the `within` rules count
/// back from the newest backup not after `now`, so one backup from a clock set ahead cannot make
/// every other one old. Ties in time are ordered by name.
pub fn decide<Tz: TimeZone>(
    candidates: &[Candidate],
    policy: &Policy,
    now: f64,
    zone: &Tz,
) -> Vec<Vec<Reason>> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        candidates[b]
            .timestamp
            .total_cmp(&candidates[a].timestamp)
            .then_with(|| candidates[a].name.cmp(&candidates[b].name))
    });
    let mut reasons = vec![Vec::new(); candidates.len()];
    let (future, present): (Vec<usize>, Vec<usize>) =
        order.iter().partition(|&&i| candidates[i].timestamp > now);
    for &i in &future {
        reasons[i].push(Reason::Future);
    }
    let at = |t: f64| {
        let seconds = t.floor();
        let nanos = (((t - seconds) * 1e9) as u32).min(999_999_999);
        zone.timestamp_opt(seconds as i64, nanos).single()
    };
    let newest = present.first().and_then(|&i| at(candidates[i].timestamp));
    let since = |span: Option<Span>| {
        let span = span.filter(|s| !s.is_zero())?;
        Some((span, span.back_from(newest.as_ref()?)?))
    };
    let within = since(policy.within);
    let mut counters = policy.counts().map(|(period, count)| Counter {
        period,
        room: count.filter(|c| c.is_on()),
        last: None,
        rank: 0,
    });
    let mut windows: Vec<(Period, Span, DateTime<Tz>, Option<i64>)> = policy
        .spans()
        .into_iter()
        .filter_map(|(period, span)| {
            let (span, since) = since(span)?;
            Some((period?, span, since, None))
        })
        .collect();

    for (nr, &i) in present.iter().enumerate() {
        let Some(time) = at(candidates[i].timestamp) else {
            continue;
        };
        let is_oldest = nr + 1 == present.len();
        if let Some((span, since)) = &within {
            if time > *since {
                reasons[i].push(Reason::Within {
                    span: *span,
                    default: policy.default_applied,
                });
            }
        }
        for counter in &mut counters {
            let Some(room) = counter.room else { continue };
            if room == Count::N(0) {
                continue;
            }
            // `--keep-last` puts each backup in a period of its own.
            let key = counter.period.map_or(nr as i64, |p| p.of(&time));
            let same = counter.last == Some(key);
            if same && !is_oldest {
                continue;
            }
            counter.last = Some(key);
            counter.rank += 1;
            if let Count::N(n) = room {
                counter.room = Some(Count::N(n - 1));
            }
            reasons[i].push(match counter.period {
                None => Reason::Last { rank: counter.rank },
                Some(period) => Reason::Period {
                    period,
                    rank: counter.rank,
                    oldest: same,
                },
            });
        }
        for (period, span, since, last) in &mut windows {
            if time <= *since {
                continue;
            }
            let key = period.of(&time);
            let same = *last == Some(key);
            if same && !is_oldest {
                continue;
            }
            *last = Some(key);
            reasons[i].push(Reason::PeriodWithin {
                period: *period,
                span: *span,
                oldest: same,
            });
        }
    }
    if let Some(&newest_valid) = present.iter().find(|&&i| candidates[i].valid) {
        reasons[newest_valid].push(Reason::NewestValid);
    }
    reasons
}

/// The state of one counting rule while the backups are walked newest first.
struct Counter {
    period: Option<Period>,
    /// How many more it keeps (`None`: the rule is off).
    room: Option<Count>,
    /// The period of the last backup it kept.
    last: Option<i64>,
    rank: u32,
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
