//! `MaxSize`: the `maximum-size` of `cache.info`, parsed and written.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// The most bytes a cache may account to its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaxSize {
    /// At most this many bytes (0: nothing is kept, the default).
    Bytes(u64),
    /// No limit: written as `"unlimited"`.
    Unlimited,
}

impl Default for MaxSize {
    /// An absent `maximum-size` means 0: nothing is kept.
    fn default() -> Self {
        MaxSize::Bytes(0)
    }
}

impl MaxSize {
    /// Read a JSON `maximum-size` value as osbuild does: a non-negative
    /// integer is a limit in bytes; a negative integer (osbuild's own tests
    /// write `-1`) and the string `"unlimited"` mean no limit; anything
    /// else (a float, another string, another type) reads as unset
    /// (`None`).
    pub fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(bytes), _) => Some(MaxSize::Bytes(bytes)),
                (None, Some(neg)) if neg < 0 => Some(MaxSize::Unlimited),
                _ => None,
            },
            Value::String(s) if s == "unlimited" => Some(MaxSize::Unlimited),
            _ => None,
        }
    }

    /// The JSON form: an integer, or `"unlimited"`.
    pub fn to_json(self) -> Value {
        match self {
            MaxSize::Bytes(n) => Value::from(n),
            MaxSize::Unlimited => Value::from("unlimited"),
        }
    }

    /// Whether `bytes` fit under this limit.
    pub fn admits(self, bytes: u64) -> bool {
        match self {
            MaxSize::Bytes(max) => bytes <= max,
            MaxSize::Unlimited => true,
        }
    }

    /// The low watermark eviction frees down to: `percent`% of the limit
    /// (`None` when unlimited).
    pub fn watermark(self, percent: u8) -> Option<u64> {
        match self {
            MaxSize::Bytes(max) => {
                Some((u128::from(max) * u128::from(percent.min(100)) / 100) as u64)
            }
            MaxSize::Unlimited => None,
        }
    }
}

impl fmt::Display for MaxSize {
    /// Human units (`512MiB`, `10GiB`, `123B`) or `unlimited`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxSize::Bytes(n) => f.write_str(&format_bytes(*n)),
            MaxSize::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A size string that [`parse_bytes`] or [`MaxSize::from_str`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: expected a number with an optional unit (K, M, G, T, KiB, MB, …) or `unlimited`")]
pub struct ParseSizeError {
    input: String,
}

impl FromStr for MaxSize {
    type Err = ParseSizeError;

    /// `unlimited`, or anything [`parse_bytes`] takes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("unlimited") {
            Ok(MaxSize::Unlimited)
        } else {
            parse_bytes(s).map(MaxSize::Bytes)
        }
    }
}

/// Parse a human size: `4096`, `10G`, `512MiB`, `1.5GB`, `2k`. Single
/// letters and `*iB` are powers of 1024, `*B` with an SI prefix (`KB`,
/// `MB`…) powers of 1000.
///
/// # Errors
///
/// [`ParseSizeError`] for anything else, a negative number or an overflow.
pub fn parse_bytes(s: &str) -> Result<u64, ParseSizeError> {
    let err = || ParseSizeError {
        input: s.to_owned(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    if let Some((int, frac)) = num.split_once('.') {
        if frac.contains('.') {
            return Err(err());
        }
        let int: u64 = int.parse().map_err(|_| err())?;
        let scale = 10u128.pow(frac.len().min(18) as u32);
        let frac: u128 = frac[..frac.len().min(18)].parse().map_err(|_| err())?;
        let total = u128::from(int) * u128::from(mult) + frac * u128::from(mult) / scale;
        u64::try_from(total).map_err(|_| err())
    } else {
        let n: u64 = num.parse().map_err(|_| err())?;
        n.checked_mul(mult).ok_or_else(err)
    }
}

/// Bytes in binary units with up to one decimal: `0B`, `4.0KiB`, `1.5GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_and_wrong_types() {
        assert_eq!(MaxSize::from_json(&json!(1024)), Some(MaxSize::Bytes(1024)));
        assert_eq!(
            MaxSize::from_json(&json!("unlimited")),
            Some(MaxSize::Unlimited)
        );
        // osbuild: `self._info_maximum_size < 0` is unlimited.
        for neg in [json!(-1), json!(-4096), json!(i64::MIN)] {
            assert_eq!(MaxSize::from_json(&neg), Some(MaxSize::Unlimited), "{neg}");
        }
        assert_eq!(MaxSize::from_json(&json!(0)), Some(MaxSize::Bytes(0)));
        for bad in [
            json!(-1.5),
            json!(1.5),
            json!("10G"),
            json!(null),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(MaxSize::from_json(&bad), None, "{bad}");
        }
        assert_eq!(MaxSize::Bytes(7).to_json(), json!(7));
        assert_eq!(MaxSize::Unlimited.to_json(), json!("unlimited"));
        assert_eq!(MaxSize::default(), MaxSize::Bytes(0));
    }

    #[test]
    fn parses_human_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("10G"), Ok(10 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5k"), Ok(1536));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert_eq!(parse_bytes(" 3 KiB "), Ok(3072));
        for bad in [
            "",
            "x",
            "-1",
            "1.2.3",
            "1Q",
            "99999999999999999999",
            "16EiB",
            ".5",
            "5.",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!("unlimited".parse::<MaxSize>(), Ok(MaxSize::Unlimited));
        assert_eq!("1G".parse::<MaxSize>(), Ok(MaxSize::Bytes(1 << 30)));
    }

    #[test]
    fn formats_and_limits() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1536), "1.5KiB");
        assert_eq!(format_bytes(10 << 30), "10.0GiB");
        assert_eq!(MaxSize::Unlimited.to_string(), "unlimited");
        assert!(MaxSize::Bytes(10).admits(10));
        assert!(!MaxSize::Bytes(10).admits(11));
        assert_eq!(MaxSize::Bytes(1000).watermark(90), Some(900));
        assert_eq!(MaxSize::Unlimited.watermark(90), None);
    }
}
