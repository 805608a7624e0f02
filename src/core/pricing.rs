//! What the warm capacity costs, from prices the user gives (`pricing` in the configuration).
//! Pure. The reservation is the placeholders' requests; a node is paid for whole, so this is
//! the share of the warm nodes the spare slots hold, not a bill.

use serde::{Deserialize, Serialize};

/// Hours in an average month (365.25 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.5;

/// `pricing`: what one CPU core and one GiB of memory cost per hour on the warm nodes (e.g.
/// an m6i.large's on-demand price split between its 2 vCPU and 8 GiB).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pricing {
    pub cpu_core_hour: f64,
    #[serde(rename = "memoryGiBHour")]
    pub memory_gib_hour: f64,
    /// Printed after the figure (`USD`, `EUR`).
    #[serde(default = "usd")]
    pub currency: String,
}

fn usd() -> String {
    "USD".into()
}

impl Pricing {
    /// Why the prices cannot be used, naming the key under `pricing`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        for (key, v) in [
            ("cpuCoreHour", self.cpu_core_hour),
            ("memoryGiBHour", self.memory_gib_hour),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Some((key, format!("`{v}` is not a price: a number of at least 0")));
            }
        }
        if self.currency.trim().is_empty() || self.currency.len() > 8 {
            return Some(("currency", "must be 1 to 8 characters, e.g. USD".into()));
        }
        None
    }

    /// The cost per month of holding `cpu_millicores` and `memory_bytes`.
    pub fn monthly(&self, cpu_millicores: u64, memory_bytes: u64) -> f64 {
        let cores = cpu_millicores as f64 / 1000.0;
        let gib = memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
        (cores * self.cpu_core_hour + gib * self.memory_gib_hour) * HOURS_PER_MONTH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Pricing {
        Pricing {
            cpu_core_hour: 0.04,
            memory_gib_hour: 0.005,
            currency: "USD".into(),
        }
    }

    #[test]
    fn a_month_of_the_reservation() {
        // One default slot (640m, 2150Mi): 0.64 × 0.04 + 2.0996 × 0.005 per hour.
        let m = prices().monthly(640, 2150 * 1024 * 1024);
        let hourly = 0.64 * 0.04 + (2150.0 / 1024.0) * 0.005;
        assert!((m - hourly * HOURS_PER_MONTH).abs() < 1e-9, "{m}");
        assert_eq!(prices().monthly(0, 0), 0.0);
    }

    #[test]
    fn the_keys_are_spelled_as_documented() {
        let p: Pricing =
            serde_json::from_str(r#"{"cpuCoreHour": 0.04, "memoryGiBHour": 0.005}"#).unwrap();
        assert_eq!(p, prices());
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"cpuCoreHour": 0.04, "memoryGiBHour": 0.005, "currency": "USD"})
        );
    }

    #[test]
    fn prices_that_cannot_be_used_are_named() {
        let mut p = prices();
        assert_eq!(p.problem(), None);
        p.memory_gib_hour = -1.0;
        assert_eq!(p.problem().map(|(k, _)| k), Some("memoryGiBHour"));
        p.memory_gib_hour = f64::NAN;
        assert_eq!(p.problem().map(|(k, _)| k), Some("memoryGiBHour"));
        let mut p = prices();
        p.currency = " ".into();
        assert_eq!(p.problem().map(|(k, _)| k), Some("currency"));
    }
}
