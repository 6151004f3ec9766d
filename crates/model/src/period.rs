//! Calendar periods for usage limits, aligned in UTC as 3scale aligns them: a `minute`
//! window starts at second 0, a `week` on Monday 00:00, a `month` on the 1st, and
//! `eternity` never resets.
//!
//! Time is plain Unix seconds (`i64`); callers read their clock once per request and
//! pass the value in, so everything here is pure and exact under test.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A calendar period of a usage limit, aligned in UTC as in 3scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// From second 0 of a minute.
    Minute,
    /// From minute 0 of an hour.
    Hour,
    /// From 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC.
    Week,
    /// From the 1st of a month, 00:00 UTC.
    Month,
    /// From January 1st, 00:00 UTC.
    Year,
    /// Never resets.
    Eternity,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 7] =
        [Period::Minute, Period::Hour, Period::Day, Period::Week, Period::Month, Period::Year, Period::Eternity];

    /// The lower-case name (`minute` … `eternity`), as in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
            Period::Eternity => "eternity",
        }
    }

    /// The `[start, end)` of the window containing `now`; `end` is `None` for eternity.
    pub fn window(self, now: i64) -> (i64, Option<i64>) {
        const DAY: i64 = 86_400;
        match self {
            Period::Minute => {
                let s = now - now.rem_euclid(60);
                (s, Some(s + 60))
            }
            Period::Hour => {
                let s = now - now.rem_euclid(3_600);
                (s, Some(s + 3_600))
            }
            Period::Day => {
                let s = now - now.rem_euclid(DAY);
                (s, Some(s + DAY))
            }
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday-aligned weeks start 3 days later.
                let days = now.div_euclid(DAY);
                let monday = days - (days + 3).rem_euclid(7);
                (monday * DAY, Some((monday + 7) * DAY))
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(now.div_euclid(DAY));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(y, m, 1) * DAY, Some(days_from_civil(ny, nm, 1) * DAY))
            }
            Period::Year => {
                let (y, _, _) = civil_from_days(now.div_euclid(DAY));
                (days_from_civil(y, 1, 1) * DAY, Some(days_from_civil(y + 1, 1, 1) * DAY))
            }
            Period::Eternity => (0, None),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as an RFC 3339 UTC time, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix_secs: i64) -> String {
    let (days, rest) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The date of a count of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(y: i64, m: u32, d: u32, hh: i64, mm: i64, ss: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + hh * 3_600 + mm * 60 + ss
    }

    #[test]
    fn civil_round_trips_over_four_centuries() {
        for day in (-200_000..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn windows_are_calendar_aligned() {
        let now = ts(2026, 11, 26, 18, 17, 42); // a Thursday
        assert_eq!(Period::Minute.window(now), (ts(2026, 11, 26, 18, 17, 0), Some(ts(2026, 11, 26, 18, 18, 0))));
        assert_eq!(Period::Hour.window(now), (ts(2026, 11, 26, 18, 0, 0), Some(ts(2026, 11, 26, 19, 0, 0))));
        assert_eq!(Period::Day.window(now), (ts(2026, 11, 26, 0, 0, 0), Some(ts(2026, 11, 27, 0, 0, 0))));
        assert_eq!(Period::Week.window(now), (ts(2026, 11, 23, 0, 0, 0), Some(ts(2026, 11, 30, 0, 0, 0))));
        assert_eq!(Period::Month.window(now), (ts(2026, 11, 1, 0, 0, 0), Some(ts(2026, 12, 1, 0, 0, 0))));
        assert_eq!(Period::Year.window(now), (ts(2026, 1, 1, 0, 0, 0), Some(ts(2027, 1, 1, 0, 0, 0))));
        assert_eq!(Period::Eternity.window(now), (0, None));
    }

    #[test]
    fn edges_belong_to_the_window_they_open() {
        let monday = ts(2026, 11, 30, 0, 0, 0);
        assert_eq!(Period::Week.window(monday).0, monday);
        assert_eq!(Period::Week.window(monday - 1).0, ts(2026, 11, 23, 0, 0, 0));
        let december = ts(2026, 12, 31, 23, 59, 59);
        assert_eq!(Period::Month.window(december).1, Some(ts(2027, 1, 1, 0, 0, 0)));
        assert_eq!(Period::Month.window(ts(2028, 2, 29, 12, 0, 0)).1, Some(ts(2028, 3, 1, 0, 0, 0)));
    }
}
