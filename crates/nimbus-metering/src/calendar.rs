//! UTC calendar arithmetic on Unix minutes: days for `--by day`, months for the free tier.
//! (Howard Hinnant's `civil_from_days` / `days_from_civil`; no time-zone database needed.)

#[cfg(test)]
mod tests;

/// Minutes in a day.
pub const MINUTES_PER_DAY: u64 = 24 * 60;

/// The day (since 1970-01-01, UTC) a Unix minute falls in.
pub fn day_of_minute(minute: u64) -> u64 {
    minute / MINUTES_PER_DAY
}

/// `(year, month 1–12, day 1–31)` of a day since 1970-01-01.
pub fn civil_from_days(day: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = day + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March
    let d = day_of_year - (153 * march_month + 2) / 5 + 1;
    let m = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let y = year_of_era + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date on or after it; `month` 1–12, `day` 1–31.
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let march_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `YYYY-MM-DD` of a day since 1970-01-01.
pub fn date_of_day(day: u64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The first minute of the calendar month (UTC) that `minute` falls in.
pub fn month_start_minute(minute: u64) -> u64 {
    let (y, m, _) = civil_from_days(day_of_minute(minute));
    days_from_civil(y, m, 1) * MINUTES_PER_DAY
}

/// The first minute of the calendar month after the one `minute` falls in.
pub fn next_month_start_minute(minute: u64) -> u64 {
    let (y, m, _) = civil_from_days(day_of_minute(minute));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * MINUTES_PER_DAY
}
