//! Human-written durations (`"100ms"`, `"1.5s"`) and sizes (`"64M"`) as Shoal's configuration
//! files use them.
//!
//! Both parsers are strict: no whitespace, no sign, exactly one unit, so that a typo is an error
//! rather than a surprising value. Their error strings are complete reasons, ready to be put after
//! `field restart.delay: ` in a configuration error.

use std::time::Duration;

const DURATION_HINT: &str = "(use 100ms, 5s, 2m, 1h)";
const SIZE_HINT: &str = "(use 4096, 256K, 64M, 2G, 1T)";

/// Parses a duration: a decimal number (`5`, `1.5`) directly followed by one unit, `us`, `ms`,
/// `s`, `m` or `h`. Fractions finer than a nanosecond are truncated.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let not_a_duration = || format!("{text:?} is not a duration {DURATION_HINT}");
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; a duration must be 0 or more"
        ));
    }
    let (number, unit) = split_number(text);
    let unit_nanos: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return Err(not_a_duration()),
    };
    let nanos = scale_decimal(number, unit_nanos)
        .ok_or_else(not_a_duration)?
        .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    // The remainder of a division by 10^9 always fits.
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Parses a size in bytes: plain digits (`4096`), or a decimal number directly followed by one of
/// `K`, `M`, `G`, `T` (either case), which are powers of 1024 as cgroup files use them.
/// Fractions of a byte are truncated (`1.5K` is 1536).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let not_a_size = || format!("{text:?} is not a size {SIZE_HINT}");
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative; a size must be 0 or more"));
    }
    let (number, unit) = split_number(text);
    let multiplier: u128 = match unit {
        // A fraction of a byte is never meant.
        "" if !number.contains('.') => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        "t" | "T" => 1 << 40,
        _ => return Err(not_a_size()),
    };
    let bytes = scale_decimal(number, multiplier)
        .ok_or_else(not_a_size)?
        .ok_or_else(|| format!("{text:?} is too large a size"))?;
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large a size"))
}

/// Splits `text` into its leading run of digits and dots and the rest.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// `number` (digits, optionally one `.` with digits on both sides) times `unit`, truncated.
/// Outer `None`: not a number. Inner `None`: overflow.
fn scale_decimal(number: &str, unit: u128) -> Option<Option<u128>> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || (number.contains('.') && !is_digits(fraction)) {
        return None;
    }
    let mut value: u128 = 0;
    for digit in whole.bytes() {
        let Some(next) = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
        else {
            return Some(None);
        };
        value = next;
    }
    let Some(mut scaled) = value.checked_mul(unit) else {
        return Some(None);
    };
    // 18 digits resolve far below a nanosecond of an hour or a byte of a terabyte; more would
    // only risk overflowing the product below.
    let mut divisor: u128 = 1;
    let mut fraction_value: u128 = 0;
    for digit in fraction.bytes().take(18) {
        divisor *= 10;
        fraction_value = fraction_value * 10 + u128::from(digit - b'0');
    }
    // fraction_value < 10^18 < 2^60 and every unit is below 2^42, so the product fits.
    scaled = match scaled.checked_add(fraction_value * unit / divisor) {
        Some(total) => total,
        None => return Some(None),
    };
    Some(Some(scaled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn fractional_durations() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("0.1h"), Ok(Duration::from_secs(360)));
        // Below a nanosecond: truncated.
        assert_eq!(parse_duration("1.0000000019s"), Ok(Duration::new(1, 1)));
        assert_eq!(
            parse_duration("0.000000000000000000000000000000000000000009s"),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn rejects_malformed_durations() {
        for text in [
            "",
            "s",
            "5",
            "5 s",
            " 5s",
            "5s ",
            "5S",
            "5sec",
            "5 parsecs",
            "1.s",
            ".5s",
            "1..5s",
            "1.5.2s",
            "+5s",
            "5d",
            "1m30s",
            "ms",
            "0x10s",
            "1e3s",
            "５s",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(format!(
                    "{text:?} is not a duration (use 100ms, 5s, 2m, 1h)"
                )),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejects_negative_durations() {
        assert_eq!(
            parse_duration("-5s"),
            Err(r#""-5s" is negative; a duration must be 0 or more"#.to_owned())
        );
    }

    #[test]
    fn rejects_overflowing_durations() {
        // u64::MAX seconds fit, one more does not.
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
        for text in [
            "18446744073709551616s",
            "5124095576030432h",
            "999999999999999999999999999999999999999999h",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(format!("{text:?} is too long a duration")),
                "{text:?}"
            );
        }
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("256K"), Ok(256 * 1024));
        assert_eq!(parse_bytes("256k"), Ok(256 * 1024));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1T"), Ok(1 << 40));
        assert_eq!(parse_bytes("1.5K"), Ok(1536));
        assert_eq!(parse_bytes("0.5M"), Ok(512 * 1024));
        // Fractions of a byte are truncated.
        assert_eq!(parse_bytes("0.1K"), Ok(102));
    }

    #[test]
    fn rejects_malformed_sizes() {
        for text in [
            "", "K", "1.5", "64MB", "64MiB", "64 M", " 64M", "64M ", "1P", "0x40", "1e6", "+1K",
            "1.K", ".5K", "max",
        ] {
            assert_eq!(
                parse_bytes(text),
                Err(format!(
                    "{text:?} is not a size (use 4096, 256K, 64M, 2G, 1T)"
                )),
                "{text:?}"
            );
        }
    }

    #[test]
    fn rejects_negative_sizes() {
        assert_eq!(
            parse_bytes("-1M"),
            Err(r#""-1M" is negative; a size must be 0 or more"#.to_owned())
        );
    }

    #[test]
    fn rejects_overflowing_sizes() {
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_bytes("16777215T"), Ok(16_777_215 << 40));
        for text in [
            "18446744073709551616",
            "16777216T",
            "99999999999999999999999999999999999999999999",
        ] {
            assert_eq!(
                parse_bytes(text),
                Err(format!("{text:?} is too large a size")),
                "{text:?}"
            );
        }
    }
}
