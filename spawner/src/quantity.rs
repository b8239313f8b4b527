//! Resource quantities as Kubernetes writes them (`512Mi`, `2Gi`, `500m`, `0.5`), parsed
//! once when the settings are read, so a bad value is an error naming its key rather than a
//! limit silently left out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A memory size in bytes: a number with an optional suffix, binary (`Ki`, `Mi`, `Gi`,
/// `Ti`) or decimal (`k`, `M`, `G`, `T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory(pub u64);

/// A CPU amount in thousandths of a CPU: `2`, `0.5` or `500m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cpus(pub u64);

impl FromStr for Memory {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let factor: u64 = match suffix {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a memory size such as 512Mi or 2Gi"))?;
        let bytes = value * factor as f64;
        if !(1.0..1e18).contains(&bytes) {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(Memory(bytes as u64))
    }
}

impl FromStr for Cpus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not a CPU amount such as 2, 0.5 or 500m");
        let millis = match text.strip_suffix('m') {
            Some(millis) => millis.parse::<u64>().map_err(|_| bad())?,
            None => {
                let cpus: f64 = text.parse().map_err(|_| bad())?;
                if !(cpus > 0.0 && cpus < 1e6) {
                    return Err(bad());
                }
                (cpus * 1000.0).round() as u64
            }
        };
        if millis == 0 {
            return Err(format!("{text:?} must be more than 0"));
        }
        Ok(Cpus(millis))
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&binary_size(self.0))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

/// A size in bytes as Kubernetes writes quantities: `1Gi`, `64Mi`, or plain bytes when it
/// is not a whole binary unit.
pub fn binary_size(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Reads an optional quantity: empty (`""`, null, absent) is `None`; a string or a number
/// is parsed, and a value that does not parse is an error naming what was wrong.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(serde_json::Number),
    }
    let text = match Option::<Raw>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Raw::Text(text)) => text,
        Some(Raw::Number(number)) => number.to_string(),
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes_writes_them() {
        assert_eq!("512Mi".parse::<Memory>().unwrap().0, 512 << 20);
        assert_eq!("2Gi".parse::<Memory>().unwrap().0, 2 << 30);
        assert_eq!("1G".parse::<Memory>().unwrap().0, 1_000_000_000);
        assert_eq!("1048576".parse::<Memory>().unwrap().0, 1 << 20);
        assert_eq!("1.5Gi".parse::<Memory>().unwrap().0, 3 << 29);
        assert!("2Xi"
            .parse::<Memory>()
            .unwrap_err()
            .contains("unknown unit"));
        assert!("lots".parse::<Memory>().is_err());
        assert_eq!("2".parse::<Cpus>().unwrap().0, 2000);
        assert_eq!("0.5".parse::<Cpus>().unwrap().0, 500);
        assert_eq!("250m".parse::<Cpus>().unwrap().0, 250);
        assert!("0".parse::<Cpus>().is_err());
        assert!("fast".parse::<Cpus>().is_err());
    }

    #[test]
    fn sizes_print_in_whole_binary_units_when_they_can() {
        assert_eq!(Memory(1 << 30).to_string(), "1Gi");
        assert_eq!(Memory(64 << 20).to_string(), "64Mi");
        assert_eq!(Memory(1000).to_string(), "1000");
        assert_eq!(Cpus(1500).to_string(), "1500m");
    }

    #[test]
    fn optional_quantities_read_empty_as_none_and_name_bad_values() {
        #[derive(Deserialize)]
        struct Limits {
            #[serde(default, deserialize_with = "optional")]
            memory: Option<Memory>,
            #[serde(default, deserialize_with = "optional")]
            cpus: Option<Cpus>,
        }
        let read = |json: &str| serde_json::from_str::<Limits>(json);
        let none = read(r#"{"memory": "", "cpus": null}"#).unwrap();
        assert_eq!((none.memory, none.cpus), (None, None));
        let some = read(r#"{"memory": 1024, "cpus": "500m"}"#).unwrap();
        assert_eq!(
            (some.memory, some.cpus),
            (Some(Memory(1024)), Some(Cpus(500)))
        );
        let bad = read(r#"{"memory": "2Xi"}"#).err().unwrap().to_string();
        assert!(bad.contains("unknown unit"), "{bad}");
    }
}
