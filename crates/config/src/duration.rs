//! Durations in config files: an integer (seconds) or a number with a unit (`500ms`, `10s`,
//! `5m`, `1h`, `1d`).

use std::time::Duration;

/// The longest duration a config may ask for. Larger values are surely typos, and a cap keeps
/// `Instant::now() + timeout` from overflowing (which panics) anywhere downstream.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not `<digits><unit>`.
    #[error("`{0}` is not a duration like \"500ms\", \"10s\", \"5m\" or \"1h\"")]
    Syntax(String),
    /// Longer than [`MAX`].
    #[error("`{0}` is longer than a year")]
    TooLong(String),
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`; bare digits mean seconds.
/// Zero is returned as zero: whether it is allowed is the caller's decision.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(syntax());
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| DurationError::TooLong(text.to_string()))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60 * 1000,
        "h" => 3600 * 1000,
        "d" => 24 * 3600 * 1000,
        _ => return Err(syntax()),
    };
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| DurationError::TooLong(text.to_string()))?;
    let d = Duration::from_millis(millis);
    if d > MAX {
        return Err(DurationError::TooLong(text.to_string()));
    }
    Ok(d)
}

/// Seconds given as a TOML integer; negative values are refused.
pub fn from_secs(secs: i64) -> Result<Duration, DurationError> {
    let s = u64::try_from(secs).map_err(|_| DurationError::Syntax(secs.to_string()))?;
    let d = Duration::from_secs(s);
    if d > MAX {
        return Err(DurationError::TooLong(secs.to_string()));
    }
    Ok(d)
}

/// Short human form using the largest unit that divides exactly (`5m`, `1500ms`), so what
/// `pinhole check` prints can be pasted back into a config.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(from_secs(25), Ok(Duration::from_secs(25)));
    }

    #[test]
    fn refuses_bad_text() {
        for bad in ["", "s", "10 s", "1.5s", "-1s", "10x", "ten", "5M", "1h30m"] {
            assert!(matches!(parse(bad), Err(DurationError::Syntax(_))), "{bad}");
        }
        for big in ["366d", "99999999999999999999s", "18446744073709551615h"] {
            assert!(
                matches!(parse(big), Err(DurationError::TooLong(_))),
                "{big}"
            );
        }
        assert!(from_secs(-1).is_err());
        assert!(from_secs(i64::MAX).is_err());
    }

    #[test]
    fn formats_back() {
        for text in ["500ms", "10s", "5m", "1h", "2d", "1500ms", "90s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
