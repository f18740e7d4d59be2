//! Clock skew between this host and the service, learnt from the HTTP `Date`
//! header of a reply refusing a signature as expired or not yet valid (spec §2.3),
//! and applied to later signatures.

use crate::log::{Level, log};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where "now" comes from; tests inject a clock that is off.
pub type TimeSource = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock as a [`TimeSource`].
pub fn system_time() -> TimeSource {
    Arc::new(SystemTime::now)
}

/// Service time minus local time, in milliseconds; shared by every signer of
/// one client (HTTPS calls and the presigned WSS URL).
#[derive(Debug, Default)]
pub struct ClockSkew {
    millis: AtomicI64,
}

impl ClockSkew {
    /// No correction.
    pub fn new() -> ClockSkew {
        ClockSkew::default()
    }

    /// The current correction in milliseconds (positive: the service is ahead).
    pub fn get(&self) -> i64 {
        self.millis.load(Ordering::Relaxed)
    }

    /// Sets the correction in milliseconds.
    pub fn set(&self, millis: i64) {
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// `local` shifted by the correction: the time to sign with.
    pub fn apply(&self, local: SystemTime) -> SystemTime {
        shift(local, self.get())
    }

    /// Learns the skew from a reply's `Date` header value received at local
    /// time `local_now`. Returns the new correction, or `None` (and keeps the
    /// old one) when the header does not parse.
    pub fn learn(&self, date_header: &str, local_now: SystemTime) -> Option<i64> {
        let server = parse_http_date(date_header)?;
        let millis = signed_millis(server) - signed_millis(local_now);
        let previous = self.millis.swap(millis, Ordering::Relaxed);
        log!(Level::Info, "aws", "clock skew: the service is {millis} ms ahead of this host (was {previous} ms)");
        Some(millis)
    }
}

fn signed_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn shift(t: SystemTime, millis: i64) -> SystemTime {
    let delta = Duration::from_millis(millis.unsigned_abs());
    let shifted = if millis >= 0 { t.checked_add(delta) } else { t.checked_sub(delta) };
    shifted.unwrap_or(t)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let index = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))?;
    u32::try_from(index + 1).ok()
}

/// Parses an HTTP date: the IMF-fixdate of RFC 7231 / RFC 1123
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), also without the weekday, and the
/// obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // Drop the weekday: everything up to the first comma, or the first word of asctime.
    let rest = match text.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => text,
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        // 06 Nov 1994 08:49:37 GMT
        [day, month, year, time, zone] if zone.eq_ignore_ascii_case("GMT") || *zone == "UTC" || *zone == "+0000" => {
            (day.parse().ok()?, month_number(month)?, year.parse::<i64>().ok()?, *time)
        }
        // 06-Nov-94 08:49:37 GMT
        [date, time, zone] if zone.eq_ignore_ascii_case("GMT") => {
            let mut parts = date.split('-');
            let day = parts.next()?.parse().ok()?;
            let month = month_number(parts.next()?)?;
            let year: i64 = parts.next()?.parse().ok()?;
            let year = if year < 70 {
                2000 + year
            } else if year < 100 {
                1900 + year
            } else {
                year
            };
            (day, month, year, *time)
        }
        // Sun Nov  6 08:49:37 1994
        [_, month, day, time, year] => (day.parse().ok()?, month_number(month)?, year.parse::<i64>().ok()?, *time),
        _ => return None,
    };
    let mut clock = time.split(':').map(|p| p.parse::<u32>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let in_range = (0..=9999).contains(&year) && (1..=31).contains(&day) && hour <= 23 && minute <= 59 && second <= 60;
    if clock.next().is_some() || !in_range {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let seconds = u64::try_from(seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn http_dates() {
        let expected = Some(epoch(784_111_777));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("  06 Nov 1994 08:49:37 GMT "), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        assert_eq!(parse_http_date("Sun, 01 Dec 2019 00:00:00 GMT"), Some(epoch(1_575_158_400)));
        assert_eq!(parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"), Some(epoch(1_709_251_199)));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(epoch(0)));
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Wed, 31 Dec 1969 23:59:59 GMT",
            // Found by fuzzing: the day count overflowed (a panic in debug builds).
            "Sat, 31 Dec 20199999999999996 23:59:60 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn skew_is_learnt_and_applied() {
        let skew = ClockSkew::new();
        assert_eq!(skew.get(), 0);
        assert_eq!(skew.apply(epoch(1000)), epoch(1000));
        // The service says 00:20:00 while this host thinks it is 00:00:00.
        let local = epoch(1_575_158_400);
        assert_eq!(skew.learn("Sun, 01 Dec 2019 00:20:00 GMT", local), Some(1_200_000));
        assert_eq!(skew.apply(local), epoch(1_575_158_400 + 1200));
        // Behind: negative.
        assert_eq!(skew.learn("Sat, 30 Nov 2019 23:50:00 GMT", local), Some(-600_000));
        assert_eq!(skew.apply(local), epoch(1_575_158_400 - 600));
        // A bad header keeps the last value.
        assert_eq!(skew.learn("garbage", local), None);
        assert_eq!(skew.get(), -600_000);
    }
}
