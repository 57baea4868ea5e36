use super::*;
use crate::price::{FreeTier, MemoryBasis, Prices};

/// Every price 1 currency unit per billing unit, nothing free: costs equal billing units.
fn one_per_unit() -> PriceSheet {
    let one = UnitPrice(1_000_000_000_000);
    PriceSheet {
        currency: "EUR".into(),
        memory_basis: MemoryBasis::Allocated,
        prices: Prices {
            cpu_second: one,
            memory_gb_second: one,
            egress_gb: one,
            build_minute: one,
            million_requests: one,
            function_gb_second: one,
        },
        free_tier: FreeTier::default(),
    }
}

fn cost_of(bill: &Bill, item: Item) -> u64 {
    bill.lines
        .iter()
        .find(|l| l.item == item)
        .map(|l| l.cost.0)
        .unwrap_or_default()
}

#[test]
fn line_cost_rounds_half_up_to_a_micro() {
    const ONE: UnitPrice = UnitPrice(1_000_000_000_000);
    let cases: &[(Item, u64, UnitPrice, u64)] = &[
        // (item, billable base units, price, expected micros)
        (Item::Cpu, 0, ONE, 0),                 // nothing used
        (Item::Cpu, 1_000_000, ONE, 1_000_000), // 1 CPU-s at 1.00
        (Item::Cpu, 1, ONE, 1),                 // 1 µs at 1.00/s is exactly 1 micro
        // At 1 micro per CPU-s, half a second is exactly half a micro: halves round up.
        (Item::Cpu, 500_000, UnitPrice(1_000_000), 1),
        (Item::Cpu, 499_999, UnitPrice(1_000_000), 0),
        (Item::Cpu, 1_500_000, UnitPrice(1_000_000), 2),
        // Default CPU price 0.000024: 20 833 µs = 0.499992 micro, 20 834 µs = 0.500016 micro.
        (Item::Cpu, 20_833, UnitPrice(24_000_000), 0),
        (Item::Cpu, 20_834, UnitPrice(24_000_000), 1),
        // 1 GB-s of memory at 0.0000025 is 2.5 micro → 3.
        (Item::Memory, 1_024_000, UnitPrice(2_500_000), 3),
        // 1.5 GB of egress at 0.12 = 0.18.
        (Item::Egress, 3 << 29, UnitPrice(120_000_000_000), 180_000),
        // 90 s of build at 0.003/min = 0.0045.
        (Item::Build, 90_000, UnitPrice(3_000_000_000), 4_500),
        // One request at 0.40 per million = 0.4 micro → 0; two = 0.8 → 1.
        (Item::Requests, 1, UnitPrice(400_000_000_000), 0),
        (Item::Requests, 2, UnitPrice(400_000_000_000), 1),
        // Function GB-s: 100 ms × 128 MiB = 12 800 MiB·ms = 0.0125 GB-s at 0.0000166667.
        (Item::Functions, 12_800, UnitPrice(16_666_700), 0),
        (
            Item::Functions,
            1_024_000_000,
            UnitPrice(16_666_700),
            16_667,
        ), // 1000 GB-s
        // Huge usage at the maximum price saturates instead of overflowing.
        (
            Item::Cpu,
            u64::MAX,
            UnitPrice(1_000_000_000_000_000_000),
            u64::MAX,
        ),
        (Item::Egress, u64::MAX, ONE, 17_179_869_184_000_000), // 2^34 GB
    ];
    for (item, billable, price, expected) in cases {
        assert_eq!(
            line_cost(*item, *billable, *price),
            Money(*expected),
            "{item:?} {billable} at {price}"
        );
    }
}

#[test]
fn zero_usage_costs_nothing() {
    for sheet in [PriceSheet::default(), one_per_unit()] {
        let bill = bill_month(&sheet, &Usage::default(), &Usage::default());
        assert_eq!(bill.total, Money(0));
        assert_eq!(bill.lines.len(), Item::ALL.len());
        assert!(bill.lines.iter().all(|l| l.used == 0 && l.cost == Money(0)));
    }
}

#[test]
fn free_tier_boundaries() {
    let mut sheet = one_per_unit();
    sheet.free_tier.cpu_micros = 10_000_000; // 10 CPU-s free
    let cpu = |micros| Usage {
        cpu_micros: micros,
        ..Usage::default()
    };
    let cases: &[(u64, u64, u64, u64)] = &[
        // (earlier this month µs, this window µs, expected free µs, expected cost micros)
        (0, 0, 0, 0),
        (0, 9_999_999, 9_999_999, 0),   // inside the free tier
        (0, 10_000_000, 10_000_000, 0), // free tier exactly used up
        (0, 10_000_001, 10_000_000, 1), // one µs over
        (0, 12_000_000, 10_000_000, 2_000_000),
        (4_000_000, 6_000_000, 6_000_000, 0), // earlier + now = exactly the tier
        (4_000_000, 8_000_000, 6_000_000, 2_000_000), // only what is left is free
        (10_000_000, 1_000_000, 0, 1_000_000), // tier used up earlier
        (50_000_000, 1_000_000, 0, 1_000_000), // earlier far beyond the tier
        (u64::MAX, u64::MAX, 0, u64::MAX),    // huge: saturates, no panic
    ];
    for (earlier, now, free, cost) in cases {
        let bill = bill_month(&sheet, &cpu(*earlier), &cpu(*now));
        let line = bill.lines[0];
        assert_eq!(line.item, Item::Cpu);
        assert_eq!(
            (line.used, line.free, line.billable, line.cost.0),
            (*now, *free, now - free, *cost),
            "earlier {earlier}, now {now}"
        );
        assert_eq!(bill.total, line.cost, "only CPU was used");
    }
}

#[test]
fn a_month_in_pieces_costs_the_same_as_the_whole_month() {
    let sheet = PriceSheet::default();
    let day = Usage {
        cpu_micros: 20_000 * 1_000_000,              // 20 000 CPU-s a day
        memory_allocated_mib_ms: 40_000 * 1_024_000, // 40 000 GB-s
        requests: 300_000,
        egress_bytes: 1 << 28, // 0.25 GB
        build_ms: 30 * 60_000,
        function_mib_ms: 50_000 * 1_024_000,
        ..Usage::default()
    };
    let month: Usage = std::iter::repeat_n(day, 30).sum();
    let whole = bill_month(&sheet, &Usage::default(), &month);
    let mut earlier = Usage::default();
    let mut pieces = Vec::new();
    for _ in 0..30 {
        pieces.push(bill_month(&sheet, &earlier, &day));
        earlier += day;
    }
    for item in Item::ALL {
        let billable: u64 = pieces
            .iter()
            .map(|b| {
                b.lines
                    .iter()
                    .find(|l| l.item == item)
                    .map_or(0, |l| l.billable)
            })
            .sum();
        let whole_line = whole.lines.iter().find(|l| l.item == item);
        assert_eq!(Some(billable), whole_line.map(|l| l.billable), "{item:?}");
    }
    // Costs can differ only by per-line rounding, at most half a micro per line per piece.
    let sum: u64 = pieces.iter().map(|b| b.total.0).sum();
    assert!(sum.abs_diff(whole.total.0) <= 30 * Item::ALL.len() as u64);
}

#[test]
fn default_sheet_worked_example() {
    // The example in docs/pricing.md.
    let usage = Usage {
        cpu_micros: 200_000 * 1_000_000, // 200 000 CPU-s, 20 000 over
        memory_allocated_mib_ms: 400_000 * 1_024_000, // 400 000 GB-s, 40 000 over
        memory_used_mib_ms: 1,           // not billed with basis = allocated
        instance_ms: 123,                // reported only
        requests: 2_500_000,             // 500 000 over
        egress_bytes: 3 << 30,           // 3 GB, 2 over
        ingress_bytes: 1 << 40,          // reported only
        build_ms: 150 * 60_000,          // 150 minutes, 30 over
        function_mib_ms: 500_000 * 1_024_000, // 500 000 GB-s, 100 000 over
    };
    let bill = bill_month(&PriceSheet::default(), &Usage::default(), &usage);
    let expected = &[
        (Item::Cpu, 480_000),         // 20 000 × 0.000024 = 0.48
        (Item::Memory, 100_000),      // 40 000 × 0.0000025 = 0.10
        (Item::Egress, 240_000),      // 2 × 0.12 = 0.24
        (Item::Build, 90_000),        // 30 × 0.003 = 0.09
        (Item::Requests, 200_000),    // 0.5 × 0.40 = 0.20
        (Item::Functions, 1_666_670), // 100 000 × 0.0000166667 = 1.66667
    ];
    for (item, micros) in expected {
        assert_eq!(cost_of(&bill, *item), *micros, "{item:?}");
    }
    assert_eq!(bill.total, Money(2_776_670));
    assert_eq!(format!("{:.2}", bill.total), "2.78");
    assert_eq!(bill.currency, "USD");
}

#[test]
fn memory_basis_picks_the_billed_figure() {
    let usage = Usage {
        memory_allocated_mib_ms: 2_048_000, // 2 GB-s
        memory_used_mib_ms: 1_024_000,      // 1 GB-s
        ..Usage::default()
    };
    let mut sheet = one_per_unit();
    assert_eq!(
        cost_of(&bill_gross(&sheet, &usage), Item::Memory),
        2_000_000
    );
    sheet.memory_basis = MemoryBasis::Used;
    assert_eq!(
        cost_of(&bill_gross(&sheet, &usage), Item::Memory),
        1_000_000
    );
}

#[test]
fn gross_bill_ignores_the_free_tier() {
    let usage = Usage {
        requests: 1_000_000,
        ..Usage::default()
    };
    let sheet = PriceSheet::default();
    assert_eq!(
        bill_month(&sheet, &Usage::default(), &usage).total,
        Money(0)
    );
    assert_eq!(bill_gross(&sheet, &usage).total, Money(400_000));
}

#[test]
fn money_display() {
    let cases: &[(u64, Option<usize>, &str)] = &[
        (0, None, "0.000000"),
        (1, None, "0.000001"),
        (2_776_670, None, "2.776670"),
        (2_776_670, Some(2), "2.78"),
        (2_775_000, Some(2), "2.78"), // half up
        (2_774_999, Some(2), "2.77"),
        (999_999, Some(2), "1.00"), // carries into the units
        (1_500_000, Some(0), "2"),
        (1_234_567, Some(9), "1.234567"), // at most six decimals
        (u64::MAX, Some(2), "18446744073709.55"),
    ];
    for (micros, precision, expected) in cases {
        let shown = match precision {
            Some(p) => format!("{:.*}", p, Money(*micros)),
            None => Money(*micros).to_string(),
        };
        assert_eq!(shown, *expected, "{micros} {precision:?}");
    }
}
