//! The price sheet: unit prices and a monthly free tier, parsed from TOML and validated.
//!
//! Prices are read as TOML numbers and kept as integer pico-units (10⁻¹² of the currency) per
//! billing unit, so billing is exact integer math; a price with more than 12 decimal places is
//! rounded to 12. Free-tier amounts are converted to the base units of [`Usage`](crate::Usage)
//! (rounded to the nearest base unit). [`DEFAULT_PRICE_SHEET`] is documented in `docs/pricing.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::usage::{BYTES_PER_GB, MIB_MS_PER_GB_SECOND};
use crate::Usage;

#[cfg(test)]
mod tests;

/// The sheet used when the operator gives none. `docs/pricing.md` holds the same text.
pub const DEFAULT_PRICE_SHEET: &str = r#"# Nimbus default price sheet. Prices are in `currency` per unit; GB means GiB (2^30 bytes).
currency = "USD"
# Memory billed: "allocated" (configured size x running time) or "used" (resident memory x time).
memory_basis = "allocated"

[prices]
cpu_second = 0.000024            # per CPU-second
memory_gb_second = 0.0000025     # per GB-second of memory
egress_gb = 0.12                 # per GB of responses sent to clients
build_minute = 0.003             # per minute of build time
million_requests = 0.40          # per million requests
function_gb_second = 0.0000166667 # per GB-second of function invocations

# Free every calendar month (UTC), in each quantity's own unit.
[free_tier]
cpu_seconds = 180000
memory_gb_seconds = 360000
egress_gb = 1
build_minutes = 120
requests = 2000000
function_gb_seconds = 400000
"#;

/// The highest accepted price per unit, which keeps every cost computation inside `u128`.
pub const MAX_UNIT_PRICE: f64 = 1_000_000.0;
const PICO_PER_UNIT: f64 = 1e12;

/// Why a price sheet was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceError {
    /// Bad syntax, a missing price, a misspelt or unknown key (the message names the line).
    #[error("invalid price sheet: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("{key} is {}: prices and free-tier amounts must not be negative", show(*.value))]
    Negative { key: String, value: f64 },
    #[error("{key} is not a finite number")]
    NotFinite { key: String },
    #[error("{key} is {}, above the maximum of {}", show(*.value), show(*.max))]
    TooLarge { key: String, value: f64, max: f64 },
}

/// A number as a user would write it: `0.5`, `2000000`, `1e300` (not 300 digits).
fn show(n: f64) -> String {
    if n.abs() >= 1e15 {
        format!("{n:e}")
    } else {
        format!("{n}")
    }
}

/// What is billed, one cost line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Cpu,
    Memory,
    Egress,
    Build,
    Requests,
    Functions,
}

impl Item {
    /// Every item, in bill order.
    pub const ALL: [Item; 6] = [
        Item::Cpu,
        Item::Memory,
        Item::Egress,
        Item::Build,
        Item::Requests,
        Item::Functions,
    ];

    /// The billing unit a price is quoted per.
    pub fn unit(self) -> &'static str {
        match self {
            Item::Cpu => "CPU-second",
            Item::Memory | Item::Functions => "GB-second",
            Item::Egress => "GB",
            Item::Build => "build minute",
            Item::Requests => "million requests",
        }
    }

    /// How many base units of [`Usage`] make one billing unit.
    pub fn base_units_per_unit(self) -> u64 {
        match self {
            Item::Cpu => 1_000_000,                                 // µs per CPU-second
            Item::Memory | Item::Functions => MIB_MS_PER_GB_SECOND, // MiB·ms per GB-second
            Item::Egress => BYTES_PER_GB,                           // bytes per GB
            Item::Build => 60_000,                                  // ms per minute
            Item::Requests => 1_000_000,                            // requests per million
        }
    }

    /// The quantity of this item in `usage`, in base units.
    pub fn quantity(self, usage: &Usage, basis: MemoryBasis) -> u64 {
        match self {
            Item::Cpu => usage.cpu_micros,
            Item::Memory => match basis {
                MemoryBasis::Allocated => usage.memory_allocated_mib_ms,
                MemoryBasis::Used => usage.memory_used_mib_ms,
            },
            Item::Egress => usage.egress_bytes,
            Item::Build => usage.build_ms,
            Item::Requests => usage.requests,
            Item::Functions => usage.function_mib_ms,
        }
    }
}

/// Which memory figure is billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBasis {
    /// The configured memory size for as long as the instance runs (what most clouds bill).
    #[default]
    Allocated,
    /// The resident memory actually used.
    Used,
}

/// A price per billing unit, in pico-units (10⁻¹²) of the currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitPrice(pub u64);

impl UnitPrice {
    pub fn pico(self) -> u64 {
        self.0
    }
}

impl fmt::Display for UnitPrice {
    /// Decimal, without trailing zeros: `0.0000025`, `0.4`, `3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000_000_000;
        let frac = self.0 % 1_000_000_000_000;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Unit prices, one per [`Item`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Prices {
    pub cpu_second: UnitPrice,
    pub memory_gb_second: UnitPrice,
    pub egress_gb: UnitPrice,
    pub build_minute: UnitPrice,
    pub million_requests: UnitPrice,
    pub function_gb_second: UnitPrice,
}

/// The free amount per calendar month (UTC), in the base units of [`Usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FreeTier {
    pub cpu_micros: u64,
    pub memory_mib_ms: u64,
    pub egress_bytes: u64,
    pub build_ms: u64,
    pub requests: u64,
    pub function_mib_ms: u64,
}

/// A validated price sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceSheet {
    /// A label only (`USD`, `CNY`, …); no conversion happens.
    pub currency: String,
    pub memory_basis: MemoryBasis,
    pub prices: Prices,
    pub free_tier: FreeTier,
}

impl PriceSheet {
    /// Parses and validates a sheet. Every price is required; free-tier entries default to 0.
    pub fn from_toml(text: &str) -> Result<Self, PriceError> {
        let raw: RawSheet = toml::from_str(text)?;
        raw.validate()
    }

    /// The price of one billing unit of `item`.
    pub fn price(&self, item: Item) -> UnitPrice {
        let p = &self.prices;
        match item {
            Item::Cpu => p.cpu_second,
            Item::Memory => p.memory_gb_second,
            Item::Egress => p.egress_gb,
            Item::Build => p.build_minute,
            Item::Requests => p.million_requests,
            Item::Functions => p.function_gb_second,
        }
    }

    /// The monthly free amount of `item`, in base units.
    pub fn free(&self, item: Item) -> u64 {
        let t = &self.free_tier;
        match item {
            Item::Cpu => t.cpu_micros,
            Item::Memory => t.memory_mib_ms,
            Item::Egress => t.egress_bytes,
            Item::Build => t.build_ms,
            Item::Requests => t.requests,
            Item::Functions => t.function_mib_ms,
        }
    }
}

impl Default for PriceSheet {
    /// The sheet [`DEFAULT_PRICE_SHEET`] describes (a test checks they agree).
    fn default() -> Self {
        let gb_s = MIB_MS_PER_GB_SECOND;
        PriceSheet {
            currency: "USD".to_string(),
            memory_basis: MemoryBasis::Allocated,
            prices: Prices {
                cpu_second: UnitPrice(24_000_000),
                memory_gb_second: UnitPrice(2_500_000),
                egress_gb: UnitPrice(120_000_000_000),
                build_minute: UnitPrice(3_000_000_000),
                million_requests: UnitPrice(400_000_000_000),
                function_gb_second: UnitPrice(16_666_700),
            },
            free_tier: FreeTier {
                cpu_micros: 180_000 * 1_000_000,
                memory_mib_ms: 360_000 * gb_s,
                egress_bytes: BYTES_PER_GB,
                build_ms: 120 * 60_000,
                requests: 2_000_000,
                function_mib_ms: 400_000 * gb_s,
            },
        }
    }
}

// === raw TOML shape ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSheet {
    currency: String,
    #[serde(default)]
    memory_basis: MemoryBasis,
    prices: RawPrices,
    #[serde(default)]
    free_tier: RawFreeTier,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    cpu_second: f64,
    memory_gb_second: f64,
    egress_gb: f64,
    build_minute: f64,
    million_requests: f64,
    function_gb_second: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFreeTier {
    cpu_seconds: f64,
    memory_gb_seconds: f64,
    egress_gb: f64,
    build_minutes: f64,
    requests: f64,
    function_gb_seconds: f64,
}

impl RawSheet {
    fn validate(self) -> Result<PriceSheet, PriceError> {
        let p = &self.prices;
        let t = &self.free_tier;
        let free = |key: &str, value: f64, item: Item| free_amount(key, value, item);
        Ok(PriceSheet {
            currency: self.currency,
            memory_basis: self.memory_basis,
            prices: Prices {
                cpu_second: unit_price("prices.cpu_second", p.cpu_second)?,
                memory_gb_second: unit_price("prices.memory_gb_second", p.memory_gb_second)?,
                egress_gb: unit_price("prices.egress_gb", p.egress_gb)?,
                build_minute: unit_price("prices.build_minute", p.build_minute)?,
                million_requests: unit_price("prices.million_requests", p.million_requests)?,
                function_gb_second: unit_price("prices.function_gb_second", p.function_gb_second)?,
            },
            free_tier: FreeTier {
                cpu_micros: free("free_tier.cpu_seconds", t.cpu_seconds, Item::Cpu)?,
                memory_mib_ms: free(
                    "free_tier.memory_gb_seconds",
                    t.memory_gb_seconds,
                    Item::Memory,
                )?,
                egress_bytes: free("free_tier.egress_gb", t.egress_gb, Item::Egress)?,
                build_ms: free("free_tier.build_minutes", t.build_minutes, Item::Build)?,
                // The free tier counts single requests, not millions.
                requests: whole_amount("free_tier.requests", t.requests, 1)?,
                function_mib_ms: free(
                    "free_tier.function_gb_seconds",
                    t.function_gb_seconds,
                    Item::Functions,
                )?,
            },
        })
    }
}

fn check_number(key: &str, value: f64, max: f64) -> Result<f64, PriceError> {
    if !value.is_finite() {
        return Err(PriceError::NotFinite { key: key.into() });
    }
    if value < 0.0 {
        return Err(PriceError::Negative {
            key: key.into(),
            value,
        });
    }
    if value > max {
        return Err(PriceError::TooLarge {
            key: key.into(),
            value,
            max,
        });
    }
    Ok(value)
}

fn unit_price(key: &str, value: f64) -> Result<UnitPrice, PriceError> {
    let value = check_number(key, value, MAX_UNIT_PRICE)?;
    // In range by the check above: at most 1e18 pico, below u64::MAX.
    Ok(UnitPrice((value * PICO_PER_UNIT).round() as u64))
}

fn free_amount(key: &str, value: f64, item: Item) -> Result<u64, PriceError> {
    whole_amount(key, value, item.base_units_per_unit())
}

/// `value` billing units as base units, rounded to the nearest; must fit in `u64`.
fn whole_amount(key: &str, value: f64, base_per_unit: u64) -> Result<u64, PriceError> {
    let max = u64::MAX as f64 / base_per_unit as f64;
    let value = check_number(key, value, max)?;
    Ok((value * base_per_unit as f64).round() as u64)
}
