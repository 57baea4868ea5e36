use super::*;

fn routes(alias: &Alias) -> Vec<(&str, u32)> {
    alias
        .routes
        .iter()
        .map(|r| (r.version.as_str(), r.weight))
        .collect()
}

/// (name, spec, Ok(routes) or the start of the error message)
type ParseCase = (
    &'static str,
    &'static str,
    Result<&'static [(&'static str, u32)], &'static str>,
);

#[test]
fn parsing() {
    let cases: &[ParseCase] = &[
        ("live", "v1=90,v2=10", Ok(&[("v1", 90), ("v2", 10)])),
        ("live", "v2", Ok(&[("v2", 100)])), // one version, all traffic
        ("live", "v2=100", Ok(&[("v2", 100)])),
        (
            "beta",
            " v1 = 50 , v2=25,v3=25 ",
            Ok(&[("v1", 50), ("v2", 25), ("v3", 25)]),
        ),
        (
            "live",
            "v1=90,v2=20",
            Err("weights must sum to exactly 100, got 110"),
        ),
        (
            "live",
            "v1=90",
            Err("weights must sum to exactly 100, got 90"),
        ),
        ("live", "v1=90,v2", Err("`v2` is not VERSION=PERCENT")),
        ("live", "v1=0,v2=100", Err("weight `0` of v1")),
        ("live", "v1=ten,v2=90", Err("weight `ten` of v1")),
        ("live", "v1=-10,v2=110", Err("weight `-10` of v1")),
        ("live", "v1=50,v1=50", Err("version v1 appears twice")),
        ("live", "", Err("the alias names no version")),
        ("live", "V1=100", Err("version name \"V1\" is invalid")),
        ("Live", "v1", Err("alias name \"Live\" is invalid")),
        ("v3", "v1", Err("alias name `v3` looks like a version")),
        ("v2beta", "v1", Ok(&[("v1", 100)])), // not only digits after v
    ];
    for (name, spec, expected) in cases {
        let got = Alias::parse(name, spec);
        match (expected, &got) {
            (Ok(want), Ok(alias)) => {
                assert_eq!(routes(alias), want.to_vec(), "{name} {spec}");
                assert_eq!(alias.name, *name);
            }
            (Err(prefix), Err(e)) => {
                assert!(e.to_string().starts_with(prefix), "{name} {spec}: {e}")
            }
            _ => panic!("{name} {spec}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn display_round_trips() {
    let alias = Alias::parse("live", "v1=90, v2=10").unwrap();
    assert_eq!(alias.to_string(), "live v1=90,v2=10");
}

#[test]
fn known_versions() {
    let alias = Alias::parse("live", "v1=90,v3=10").unwrap();
    assert!(alias.check_versions(&["v1", "v2", "v3"]).is_ok());
    assert_eq!(
        alias.check_versions(&["v1", "v2"]).unwrap_err().to_string(),
        "version v3 does not exist; versions are: v1, v2"
    );
    assert!(alias
        .check_versions(&[])
        .unwrap_err()
        .to_string()
        .ends_with("(none)"));
}

#[test]
fn picks() {
    let alias = Alias::parse("live", "v1=90,v2=10").unwrap();
    let three = Alias::parse("live", "a=1,b=98,c=1").unwrap();
    // (alias, roll, version)
    let cases: &[(&Alias, u32, &str)] = &[
        (&alias, 0, "v1"),
        (&alias, 89, "v1"), // last roll of v1's range
        (&alias, 90, "v2"),
        (&alias, 99, "v2"),
        (&alias, 1000, "v2"), // out of range counts as 99
        (&three, 0, "a"),
        (&three, 1, "b"),
        (&three, 98, "b"),
        (&three, 99, "c"),
    ];
    for (a, roll, expected) in cases {
        assert_eq!(a.pick(*roll), *expected, "{a} roll {roll}");
    }
}

/// SplitMix64: a small deterministic generator, so the test never flakes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn ninety_ten_distribution() {
    let alias = Alias::parse("live", "v1=90,v2=10").unwrap();
    let mut rng = SplitMix(42);
    let rolls = 10_000;
    let v1 = (0..rolls)
        .filter(|_| alias.pick((rng.next() % 100) as u32) == "v1")
        .count();
    let share = v1 as f64 / rolls as f64;
    assert!((0.85..=0.95).contains(&share), "v1 got {share:.3}");
}
