//! Metering and cost: what each version of each service used, minute by minute, and what that
//! costs under a price sheet.
//!
//! The crate owns the whole path from the kernel to a bill, with the decisions pure and the I/O
//! at the two edges: [`sample`] reads cumulative counters from `/proc` or a cgroup; the [`Meter`]
//! turns successive samples (plus request, build and function counts the caller reports) into
//! per-minute [`Rollup`] rows without double counting across counter resets or server restarts;
//! [`store`] keeps those rows in the server's SQLite file; [`bill_month`] prices a [`Usage`] with a
//! [`PriceSheet`]. It never decides when to sample or what runs: the server calls it.
//!
//! # Layout
//! - [`usage`]: [`Usage`], the quantities in exact integer units, and the GB-s formulas.
//! - [`price`]: [`PriceSheet`] from TOML, [`DEFAULT_PRICE_SHEET`] (documented in `docs/pricing.md`).
//! - [`bill`]: [`bill_month`], [`bill_gross`], [`Money`]; rounding rules.
//! - [`sample`]: `/proc/PID/stat` per process group or tree; cgroup v2 `cpu.stat` and
//!   `memory.current`.
//! - [`meter`]: [`Meter`], [`Sample`], [`Rollup`], [`Flush`]: deltas and restart safety.
//! - [`store`]: [`UsageStore`]: `usage_minutes` and friends, queries by service/version/day.
//! - [`calendar`]: UTC days and months of Unix minutes.

#![forbid(unsafe_code)]

pub mod bill;
pub mod calendar;
pub mod meter;
pub mod price;
pub mod sample;
pub mod store;
pub mod usage;

pub use bill::{bill_gross, bill_month, Bill, CostLine, Money};
pub use meter::{minute_of, Flush, Meter, MeterState, Rollup, Sample, UsageKey};
pub use price::{Item, MemoryBasis, PriceError, PriceSheet, UnitPrice, DEFAULT_PRICE_SHEET};
pub use sample::{ProcSnapshot, ProcessSample, SampleError};
pub use store::{GroupBy, UsageFilter, UsageGroup, UsageStore, UsageStoreError};
pub use usage::{function_mib_ms, Usage};
