//! Human units on the command line: durations (`3d`, `1h30m`) and ages.

use std::time::Duration;

/// Parse a duration: one or more `<number><unit>` parts, units `s`, `m`,
/// `h`, `d`, `w` (or their long forms `sec`, `min`, `hour`, `day`, `week`,
/// singular or plural): `30s`, `90m`, `12h`, `3d`, `1w`, `1h30m`.
///
/// A bare number is refused: `3` could mean seconds or days.
///
/// # Errors
///
/// A message naming the input and the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = |why: &str| {
        format!("invalid duration {s:?}: {why} (expected e.g. 30s, 90m, 12h, 3d, 1w or 1h30m)")
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs: u64 = match rest[..unit_len].trim() {
            "" => return Err(err("missing unit")),
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(err("unknown unit")),
        };
        total = n
            .checked_mul(secs)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| err("too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs(total))
}

/// An age in the largest whole unit: `12s`, `5m`, `3h`, `2d`, `6w`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        86_400..1_209_600 => format!("{}d", s / 86_400),
        _ => format!("{}w", s / 604_800),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let h = |n: u64| Duration::from_secs(n * 3_600);
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("12h"), Ok(h(12)));
        assert_eq!(parse_duration("3d"), Ok(h(72)));
        assert_eq!(parse_duration("1w"), Ok(h(168)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 2 days "), Ok(h(48)));
        for bad in [
            "",
            "3",
            "d",
            "3x",
            "-1d",
            "1.5h",
            "99999999999999999999w",
            "3dd",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.starts_with("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(Duration::from_secs(5)), "5s");
        assert_eq!(format_age(Duration::from_secs(125)), "2m");
        assert_eq!(format_age(Duration::from_secs(7_200)), "2h");
        assert_eq!(format_age(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(format_age(Duration::from_secs(30 * 86_400)), "4w");
    }
}
