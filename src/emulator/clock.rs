//! Calendar arithmetic for SigV4 dates (`20240101T000000Z`), HTTP `Date`
//! headers (RFC 9110 IMF-fixdate) and ISO-8601 times (`2024-01-01T00:00:00Z`), in whole seconds since the Unix epoch (UTC).
//! Pure functions; the emulator's notion of "now" (with its test offset) lives in
//! [`super::Shared::now_epoch`].

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Splits epoch seconds into (year, month, day, hour, minute, second).
fn split(epoch: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (year, month, day) = civil_from_days(epoch.div_euclid(86_400));
    let seconds = epoch.rem_euclid(86_400);
    (year, month, day, seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// `yyyymmddTHHMMSSZ`, the SigV4 `X-Amz-Date` form.
pub(super) fn amz_date(epoch: i64) -> String {
    let (year, month, day, hour, minute, second) = split(epoch);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
}

/// `yyyy-mm-ddTHH:MM:SSZ`, the ISO-8601 (RFC 3339) form of the AWS IoT
/// credentials provider's `expiration`.
pub(super) fn iso8601(epoch: i64) -> String {
    let (year, month, day, hour, minute, second) = split(epoch);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// Parses the `yyyymmddTHHMMSSZ` form; `None` for anything else.
pub(super) fn parse_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8].iter().chain(&bytes[9..15]).all(u8::is_ascii_digit);
    if !well_formed {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().ok();
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the HTTP `Date` header form.
pub(super) fn http_date(epoch: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (year, month, day, hour, minute, second) = split(epoch);
    let weekday = WEEKDAYS[epoch.div_euclid(86_400).rem_euclid(7) as usize];
    let month = MONTHS[month as usize - 1];
    format!("{weekday}, {day:02} {month} {year:04} {hour:02}:{minute:02}:{second:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2019-12-01T00:00:00Z, the JS SDK's signing test date (spec §2.2).
        assert_eq!(parse_amz_date("20191201T000000Z"), Some(1_575_158_400));
        assert_eq!(amz_date(1_575_158_400), "20191201T000000Z");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(amz_date(951_825_599), "20000229T115959Z");
        assert_eq!(parse_amz_date("20000229T115959Z"), Some(951_825_599));
    }

    #[test]
    fn round_trip_over_centuries() {
        for epoch in (-2_208_988_800_i64..4_102_444_800).step_by(86_400 * 37 + 3_671) {
            assert_eq!(parse_amz_date(&amz_date(epoch)), Some(epoch), "{}", amz_date(epoch));
        }
    }

    #[test]
    fn malformed_dates() {
        for text in
            ["", "20191201T000000", "20191201 000000Z", "2019120aT000000Z", "20190230T000000Z", "20191301T000000Z"]
        {
            assert_eq!(parse_amz_date(text), None, "{text}");
        }
        assert_eq!(parse_amz_date("19000229T000000Z"), None);
        assert!(parse_amz_date("20240229T235959Z").is_some());
    }
}
