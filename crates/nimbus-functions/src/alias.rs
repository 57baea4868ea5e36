//! Weighted aliases: `nimbus fn alias set NAME live v1=90,v2=10` names a split of a function's
//! versions, as Lambda and SCF aliases do. Invoking `NAME:live` runs one version picked by
//! weight.
//!
//! Pure: [`Alias::pick`] takes a dice roll in `0..100` from the caller, like the service
//! traffic split ([`nimbus_model::TrafficPolicy::evaluate`]).

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// A named, weighted split of versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub name: String,
    /// In the order given; weights sum to 100.
    pub routes: Vec<AliasRoute>,
}

/// One version of an alias and its share in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRoute {
    pub version: String,
    pub weight: u32,
}

/// An alias that cannot be accepted; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("{0}")]
    InvalidName(String),
    #[error("alias name `{0}` looks like a version; pick a name such as live or beta")]
    LooksLikeVersion(String),
    #[error("the alias names no version; expected e.g. v1=90,v2=10 or v2")]
    Empty,
    #[error("`{0}` is not VERSION=PERCENT, e.g. v2=10")]
    Malformed(String),
    #[error("weight `{weight}` of {version} is not a whole percentage 1-100")]
    InvalidWeight { version: String, weight: String },
    #[error("version {0} appears twice in the alias")]
    Duplicate(String),
    #[error("weights must sum to exactly 100, got {0}")]
    Sum(u32),
    #[error("version {version} does not exist; versions are: {known}")]
    UnknownVersion { version: String, known: String },
}

// === impl Alias ===

impl Alias {
    /// Parses `name` and `spec`: `v1=90,v2=10` (weights 1–100 summing to 100), or a single
    /// version `v2` meaning `v2=100`. Versions are checked for form, not existence (see
    /// [`Alias::check_versions`]).
    pub fn parse(name: &str, spec: &str) -> Result<Self, AliasError> {
        nimbus_model::names::validate_name("alias", name)
            .map_err(|e| AliasError::InvalidName(e.message))?;
        if looks_like_version(name) {
            return Err(AliasError::LooksLikeVersion(name.to_owned()));
        }
        let parts: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(AliasError::Empty);
        }
        let mut routes: Vec<AliasRoute> = Vec::with_capacity(parts.len());
        for part in &parts {
            let (version, weight) = match part.split_once('=') {
                Some((version, weight)) => (version.trim(), Some(weight.trim())),
                None if parts.len() == 1 => (*part, None),
                None => return Err(AliasError::Malformed((*part).to_owned())),
            };
            nimbus_model::names::validate_name("version", version)
                .map_err(|e| AliasError::InvalidName(e.message))?;
            let weight = match weight {
                None => 100,
                Some(text) => text
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=100).contains(w))
                    .ok_or_else(|| AliasError::InvalidWeight {
                        version: version.to_owned(),
                        weight: text.to_owned(),
                    })?,
            };
            if routes.iter().any(|r| r.version == version) {
                return Err(AliasError::Duplicate(version.to_owned()));
            }
            routes.push(AliasRoute {
                version: version.to_owned(),
                weight,
            });
        }
        let total: u32 = routes.iter().map(|r| r.weight).sum();
        if total != 100 {
            return Err(AliasError::Sum(total));
        }
        Ok(Self {
            name: name.to_owned(),
            routes,
        })
    }

    /// Checks that every version of the alias exists; `known` lists the function's versions.
    pub fn check_versions(&self, known: &[&str]) -> Result<(), AliasError> {
        match self
            .routes
            .iter()
            .find(|r| !known.contains(&r.version.as_str()))
        {
            Some(missing) => Err(AliasError::UnknownVersion {
                version: missing.version.clone(),
                known: if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                },
            }),
            None => Ok(()),
        }
    }

    /// The version for one invocation. `roll` is a uniform dice roll in `0..100`; versions
    /// take consecutive ranges in order (`v1=90,v2=10`: 0–89 → v1, 90–99 → v2). A roll ≥ 100
    /// counts as 99.
    pub fn pick(&self, roll: u32) -> &str {
        let roll = roll.min(99);
        let mut upper = 0;
        for route in &self.routes {
            upper += route.weight;
            if roll < upper {
                return &route.version;
            }
        }
        // Unreachable for a parsed alias (weights sum to 100); the last version absorbs it.
        self.routes.last().map_or("", |r| r.version.as_str())
    }
}

impl fmt::Display for Alias {
    /// `live v1=90,v2=10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.name)?;
        for (i, route) in self.routes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", route.version, route.weight)?;
        }
        Ok(())
    }
}

/// `v` followed by digits only: the form of generated version names.
fn looks_like_version(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
}
