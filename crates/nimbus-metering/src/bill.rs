//! Usage → cost lines and a total, applying the monthly free tier. Pure integer math.
//!
//! # Rounding
//! Each line is computed exactly (`billable base units × pico price ÷ base units per billing
//! unit`, in `u128`) and rounded **once** to the nearest micro-unit (10⁻⁶) of the currency, halves
//! up. The total is the sum of the rounded lines, so the lines on a bill always add up to its total.
//! A line too large for `u64` micro-units (18 trillion currency units) saturates.
//!
//! # Free tier
//! The free tier is per calendar month (UTC). [`bill_month`] takes the usage earlier in the same
//! month, so a window that starts mid-month gets only what is left of the free tier; a window that
//! spans several months is billed one month at a time by the caller.

use std::fmt;

use serde::Serialize;

use crate::price::{Item, PriceSheet, UnitPrice};
use crate::usage::div_round_half_up;
use crate::Usage;

#[cfg(test)]
mod tests;

/// An amount of money in micro-units (10⁻⁶) of the sheet's currency. JSON: the integer micros.
///
/// `Display` prints six decimals; a precision rounds halves up: `format!("{:.2}", m)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Money(pub u64);

impl Money {
    pub fn micros(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimals = f.precision().unwrap_or(6).min(6);
        let scale = 10u128.pow(6 - decimals as u32);
        let scaled = div_round_half_up(u128::from(self.0), scale);
        let one = 10u128.pow(decimals as u32);
        if decimals == 0 {
            write!(f, "{scaled}")
        } else {
            write!(f, "{}.{:0decimals$}", scaled / one, scaled % one)
        }
    }
}

/// One item of a bill. Quantities are in the base units of [`Usage`]
/// (see [`Item::base_units_per_unit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CostLine {
    pub item: Item,
    /// The quantity in the billed window.
    pub used: u64,
    /// The part of `used` the free tier covered.
    pub free: u64,
    /// `used - free`: what is charged.
    pub billable: u64,
    pub unit_price: UnitPrice,
    pub cost: Money,
}

impl CostLine {
    /// `used` in billing units (CPU-seconds, GB-seconds, GB, …), for display.
    pub fn used_units(&self) -> f64 {
        self.used as f64 / self.item.base_units_per_unit() as f64
    }

    /// `billable` in billing units, for display.
    pub fn billable_units(&self) -> f64 {
        self.billable as f64 / self.item.base_units_per_unit() as f64
    }
}

/// Cost lines, one per [`Item`] in [`Item::ALL`] order, and their sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bill {
    pub currency: String,
    pub lines: Vec<CostLine>,
    pub total: Money,
}

/// The bill for `usage` in one calendar month, after `earlier` usage in the same month has
/// already used up part of the free tier. For a whole month pass `Usage::default()` as `earlier`.
pub fn bill_month(sheet: &PriceSheet, earlier: &Usage, usage: &Usage) -> Bill {
    build(sheet, usage, |item| {
        let before = item.quantity(earlier, sheet.memory_basis);
        sheet.free(item).saturating_sub(before)
    })
}

/// The bill for `usage` with no free tier at all (the gross cost of one service or day among
/// many, where it is unclear whose usage the free tier should cover).
pub fn bill_gross(sheet: &PriceSheet, usage: &Usage) -> Bill {
    build(sheet, usage, |_| 0)
}

/// The cost of `billable` base units of `item` at `price`, rounded as the module doc says.
pub fn line_cost(item: Item, billable: u64, price: UnitPrice) -> Money {
    // Pico-units per micro-unit × base units per billing unit.
    let divisor = 1_000_000u128 * u128::from(item.base_units_per_unit());
    // At most (2^64) × 10^18 < 2^124: no overflow.
    let pico_x_base = u128::from(billable) * u128::from(price.pico());
    Money(u64::try_from(div_round_half_up(pico_x_base, divisor)).unwrap_or(u64::MAX))
}

fn build(sheet: &PriceSheet, usage: &Usage, free_left: impl Fn(Item) -> u64) -> Bill {
    let lines: Vec<CostLine> = Item::ALL
        .iter()
        .map(|&item| {
            let used = item.quantity(usage, sheet.memory_basis);
            let free = used.min(free_left(item));
            let billable = used - free;
            let unit_price = sheet.price(item);
            CostLine {
                item,
                used,
                free,
                billable,
                unit_price,
                cost: line_cost(item, billable, unit_price),
            }
        })
        .collect();
    let total = lines
        .iter()
        .fold(0u64, |sum, line| sum.saturating_add(line.cost.0));
    Bill {
        currency: sheet.currency.clone(),
        lines,
        total: Money(total),
    }
}
