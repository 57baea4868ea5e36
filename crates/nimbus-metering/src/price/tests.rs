use super::*;

/// A full sheet with the given `[prices]` and `[free_tier]` bodies.
fn sheet(prices: &str, free_tier: &str) -> String {
    format!("currency = \"EUR\"\n[prices]\n{prices}\n[free_tier]\n{free_tier}\n")
}

const PRICES: &str = "cpu_second = 0.00001\nmemory_gb_second = 0.000002\negress_gb = 0.1\n\
                      build_minute = 0.005\nmillion_requests = 0.5\nfunction_gb_second = 0.00001";

#[test]
fn default_sheet_parses_to_default() -> Result<(), PriceError> {
    assert_eq!(
        PriceSheet::from_toml(DEFAULT_PRICE_SHEET)?,
        PriceSheet::default()
    );
    Ok(())
}

#[test]
fn docs_carry_the_default_sheet_verbatim() {
    let docs = include_str!("../../../../docs/pricing.md");
    assert!(
        docs.contains(DEFAULT_PRICE_SHEET),
        "docs/pricing.md must contain DEFAULT_PRICE_SHEET verbatim"
    );
}

#[test]
fn prices_become_exact_pico_units() -> Result<(), PriceError> {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("0.0", 0),
        ("1", 1_000_000_000_000), // integer TOML value
        ("0.000024", 24_000_000),
        ("0.0000025", 2_500_000), // binary float noise is rounded away
        ("0.0000166667", 16_666_700),
        ("0.000000000001", 1),                  // the smallest price
        ("0.0000000000004", 0),                 // below 12 decimals: rounds to nearest
        ("1000000", 1_000_000_000_000_000_000), // the maximum
    ];
    for (text, pico) in cases {
        let toml = sheet(
            &PRICES.replace("cpu_second = 0.00001", &format!("cpu_second = {text}")),
            "",
        );
        let parsed = PriceSheet::from_toml(&toml)?;
        assert_eq!(parsed.prices.cpu_second, UnitPrice(*pico), "{text}");
    }
    Ok(())
}

#[test]
fn free_tier_becomes_base_units() -> Result<(), PriceError> {
    let free = "cpu_seconds = 1.5\nmemory_gb_seconds = 2\negress_gb = 0.5\nbuild_minutes = 3\n\
                requests = 10\nfunction_gb_seconds = 0.001";
    let parsed = PriceSheet::from_toml(&sheet(PRICES, free))?;
    assert_eq!(
        parsed.free_tier,
        FreeTier {
            cpu_micros: 1_500_000,
            memory_mib_ms: 2 * 1_024_000,
            egress_bytes: 1 << 29,
            build_ms: 180_000,
            requests: 10,
            function_mib_ms: 1_024,
        }
    );
    // A missing table or entry means nothing is free.
    let no_table = format!("currency = \"EUR\"\n[prices]\n{PRICES}\n");
    assert_eq!(
        PriceSheet::from_toml(&no_table)?.free_tier,
        FreeTier::default()
    );
    assert_eq!(
        PriceSheet::from_toml(&sheet(PRICES, "requests = 5"))?.free_tier,
        FreeTier {
            requests: 5,
            ..FreeTier::default()
        }
    );
    Ok(())
}

#[test]
fn memory_basis() -> Result<(), PriceError> {
    let cases = &[
        ("", MemoryBasis::Allocated), // default
        ("memory_basis = \"allocated\"\n", MemoryBasis::Allocated),
        ("memory_basis = \"used\"\n", MemoryBasis::Used),
    ];
    for (line, expected) in cases {
        let toml = format!("{line}{}", sheet(PRICES, ""));
        assert_eq!(
            PriceSheet::from_toml(&toml)?.memory_basis,
            *expected,
            "{line:?}"
        );
    }
    Ok(())
}

#[test]
fn rejects_bad_sheets_with_clear_errors() {
    let cases: &[(String, &str)] = &[
        // (sheet, words the message must contain)
        (
            sheet(&PRICES.replace("egress_gb = 0.1", "egress_gb = -0.1"), ""),
            "prices.egress_gb is -0.1: prices and free-tier amounts must not be negative",
        ),
        (
            sheet(PRICES, "requests = -1"),
            "free_tier.requests is -1: prices and free-tier amounts must not be negative",
        ),
        (
            sheet(&PRICES.replace("egress_gb = 0.1", "egress_gb = nan"), ""),
            "prices.egress_gb is not a finite number",
        ),
        (
            sheet(&PRICES.replace("egress_gb = 0.1", "egress_gb = inf"), ""),
            "prices.egress_gb is not a finite number",
        ),
        (
            sheet(
                &PRICES.replace("egress_gb = 0.1", "egress_gb = 2000000"),
                "",
            ),
            "prices.egress_gb is 2000000, above the maximum of 1000000",
        ),
        (
            sheet(PRICES, "cpu_seconds = 1e300"),
            "free_tier.cpu_seconds is 1e300",
        ),
        // Unknown keys, at every level: a typo must not silently price something at zero.
        (
            sheet(&format!("{PRICES}\ncpu_secnd = 1"), ""),
            "unknown field `cpu_secnd`",
        ),
        (
            sheet(PRICES, "egress_bytes = 1"),
            "unknown field `egress_bytes`",
        ),
        (
            format!("colour = \"red\"\n{}", sheet(PRICES, "")),
            "unknown field `colour`",
        ),
        // Every price is required.
        (
            sheet(&PRICES.replace("build_minute = 0.005", ""), ""),
            "missing field `build_minute`",
        ),
        (format!("[prices]\n{PRICES}\n"), "missing field `currency`"),
        (
            format!("memory_basis = \"rss\"\n{}", sheet(PRICES, "")),
            "unknown variant `rss`",
        ),
        (
            sheet(
                &PRICES.replace("egress_gb = 0.1", "egress_gb = \"0.1\""),
                "",
            ),
            "invalid type",
        ),
        ("not toml at all".to_string(), "invalid price sheet"),
    ];
    for (text, expected) in cases {
        match PriceSheet::from_toml(text) {
            Ok(parsed) => panic!("accepted {text:?} as {parsed:?}"),
            Err(e) => {
                let message = e.to_string();
                assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            }
        }
    }
}

#[test]
fn unit_price_display() {
    let cases = &[
        (0, "0"),
        (1, "0.000000000001"),
        (2_500_000, "0.0000025"),
        (400_000_000_000, "0.4"),
        (3_000_000_000_000, "3"),
        (1_250_000_000_000, "1.25"),
    ];
    for (pico, expected) in cases {
        assert_eq!(UnitPrice(*pico).to_string(), *expected);
    }
}
