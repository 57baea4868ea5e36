//! The per-service traffic policy: ordered rules on a query parameter or header, then a percent
//! split. [`TrafficPolicy::evaluate`] is what the gateway runs on every request.

use std::fmt;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::{glob, ModelError, MAX_VERSIONS_PER_SERVICE};

/// One entry of the percent split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTarget {
    pub version: String,
    pub percent: u32,
}

/// Where a rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchSource {
    Query,
    Header,
}

/// `source` parameter `name` equals `value` (a `*` glob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    pub source: MatchSource,
    pub name: String,
    pub value: String,
}

/// A gray-release rule: requests matching go to `version`, whatever the split says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    #[serde(rename = "match")]
    pub matcher: RuleMatch,
    pub version: String,
}

/// Rules are checked in order; no rule matches → the split decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficPolicy {
    pub split: Vec<TrafficTarget>,
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

/// The parts of a request a rule can look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Which version a request goes to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub version: &'a str,
    /// Index of the matching rule; `None` when the split decided.
    pub rule: Option<usize>,
}

impl fmt::Display for RuleMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            MatchSource::Query => "query",
            MatchSource::Header => "header",
        };
        write!(f, "{source} {}={}", self.name, self.value)
    }
}

impl RuleMatch {
    /// True when the request carries the parameter with a matching value (any occurrence).
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        match self.source {
            MatchSource::Header => req
                .headers
                .get_all(self.name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| glob::matches(&self.value, v)),
            MatchSource::Query => req.query.is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == self.name.as_str() && glob::matches(&self.value, &v))
            }),
        }
    }
}

impl TrafficPolicy {
    /// All traffic to one version.
    pub fn single(version: &str) -> Self {
        Self {
            split: vec![TrafficTarget {
                version: version.to_string(),
                percent: 100,
            }],
            rules: Vec::new(),
        }
    }

    /// The policy after a deploy of `new_version`: a first version takes 100%; a later one takes
    /// 100% unless `no_traffic`. Rules stay as they were.
    pub fn after_deploy(
        current: Option<&TrafficPolicy>,
        new_version: &str,
        no_traffic: bool,
    ) -> Self {
        match current {
            Some(policy) if !policy.split.is_empty() => {
                if no_traffic {
                    policy.clone()
                } else {
                    Self {
                        split: Self::single(new_version).split,
                        rules: policy.rules.clone(),
                    }
                }
            }
            _ => Self::single(new_version),
        }
    }

    /// Percent of the split going to `version` (0 if absent).
    pub fn percent_of(&self, version: &str) -> u32 {
        self.split
            .iter()
            .filter(|t| t.version == version)
            .map(|t| t.percent)
            .sum()
    }

    /// True when `version` gets a share of the split or is the target of a rule.
    pub fn routes_to(&self, version: &str) -> bool {
        self.percent_of(version) > 0 || self.rules.iter().any(|r| r.version == version)
    }

    /// Checks the policy against the service's versions. Sums must be exactly 100.
    pub fn validate(&self, versions: &[String]) -> Result<(), ModelError> {
        let known = |v: &str| versions.iter().any(|k| k == v);
        let list = versions.join(", ");
        if self.split.is_empty() {
            return Err(ModelError::invalid(
                "invalid_traffic",
                "traffic.split",
                "the split must name at least one version (e.g. v1=100)",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        let mut total: u32 = 0;
        for target in &self.split {
            if !known(&target.version) {
                return Err(ModelError::invalid(
                    "unknown_version",
                    "traffic.split",
                    format!(
                        "version {:?} does not exist; versions are: {list}",
                        target.version
                    ),
                ));
            }
            if seen.contains(&target.version.as_str()) {
                return Err(ModelError::invalid(
                    "invalid_traffic",
                    "traffic.split",
                    format!("version {} appears twice in the split", target.version),
                ));
            }
            seen.push(&target.version);
            if target.percent > 100 {
                return Err(ModelError::invalid(
                    "invalid_traffic",
                    "traffic.split",
                    format!("{}={} is above 100 percent", target.version, target.percent),
                ));
            }
            total += target.percent;
        }
        if total != 100 {
            return Err(ModelError::invalid(
                "invalid_traffic",
                "traffic.split",
                format!("percentages must sum to exactly 100, got {total}"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = format!("traffic.rules[{i}]");
            if !known(&rule.version) {
                return Err(ModelError::invalid(
                    "unknown_version",
                    field,
                    format!(
                        "rule {} sends to version {:?}, which does not exist; versions are: {list}",
                        i + 1,
                        rule.version
                    ),
                ));
            }
            let name = &rule.matcher.name;
            if name.is_empty() {
                return Err(ModelError::invalid(
                    "invalid_rule",
                    field,
                    format!("rule {} has an empty parameter name", i + 1),
                ));
            }
            if rule.matcher.source == MatchSource::Header
                && http::HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                return Err(ModelError::invalid(
                    "invalid_rule",
                    field,
                    format!("rule {}: {name:?} is not a valid header name", i + 1),
                ));
            }
        }
        Ok(())
    }

    /// Picks the version for a request. `roll` is a uniform dice roll in `0..100` supplied by the
    /// caller. Returns `None` only for an empty split.
    pub fn evaluate<'a>(&'a self, req: &RequestView<'_>, roll: u32) -> Option<Decision<'a>> {
        if let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matcher.matches(req))
        {
            return Some(Decision {
                version: &rule.version,
                rule: Some(i),
            });
        }
        let mut upper = 0;
        for target in &self.split {
            upper += target.percent;
            if roll < upper {
                return Some(Decision {
                    version: &target.version,
                    rule: None,
                });
            }
        }
        // Only reachable for a split summing below 100: the last version with weight absorbs it.
        self.split
            .iter()
            .rev()
            .find(|t| t.percent > 0)
            .or(self.split.last())
            .map(|t| Decision {
                version: &t.version,
                rule: None,
            })
    }

    /// Human-readable account of how a request would be routed, one line per step.
    pub fn explain(&self, req: &RequestView<'_>) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matcher.matches(req) {
                lines.push(format!(
                    "rule {} ({}) matches → version {}",
                    i + 1,
                    rule.matcher,
                    rule.version
                ));
                return lines;
            }
            lines.push(format!("rule {} ({}) does not match", i + 1, rule.matcher));
        }
        let split: Vec<String> = self
            .split
            .iter()
            .map(|t| format!("{}={}%", t.version, t.percent))
            .collect();
        if self.rules.is_empty() {
            lines.push(format!("no rules; the split decides: {}", split.join(", ")));
        } else {
            lines.push(format!(
                "no rule matched; the split decides: {}",
                split.join(", ")
            ));
        }
        lines
    }

    /// Checks that one more version fits. `versions` are the existing ones, oldest first.
    pub fn check_version_limit(&self, versions: &[String]) -> Result<(), ModelError> {
        if versions.len() < MAX_VERSIONS_PER_SERVICE {
            return Ok(());
        }
        let idle: Vec<&str> = versions
            .iter()
            .filter(|v| !self.routes_to(v))
            .map(String::as_str)
            .collect();
        let hint = if idle.is_empty() {
            "every version takes traffic; move traffic off one first".to_string()
        } else {
            format!(
                "delete one that takes no traffic: {} (nimbus version delete SERVICE VERSION)",
                idle.join(", ")
            )
        };
        Err(ModelError::limit(
            "version_limit",
            "version",
            format!("a service keeps at most {MAX_VERSIONS_PER_SERVICE} versions; {hint}"),
        ))
    }

    /// Refuses to delete a version that still takes traffic.
    pub fn check_delete(&self, version: &str) -> Result<(), ModelError> {
        let percent = self.percent_of(version);
        if percent > 0 {
            return Err(ModelError::conflict(
                "version_in_use",
                "version",
                format!("version {version} takes {percent}% of traffic; shift its traffic away first (nimbus traffic SERVICE --to-versions ...)"),
            ));
        }
        if let Some(i) = self.rules.iter().position(|r| r.version == version) {
            return Err(ModelError::conflict(
                "version_in_use",
                "version",
                format!("version {version} is the target of traffic rule {}; clear the rule first (nimbus traffic SERVICE --clear-routes)", i + 1),
            ));
        }
        Ok(())
    }
}

/// Parses the CLI's split syntax `v1=90,v2=10`.
pub fn parse_split(text: &str) -> Result<Vec<TrafficTarget>, ModelError> {
    let field = "traffic.split";
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (version, percent) = part.split_once('=').ok_or_else(|| {
                ModelError::invalid(
                    "invalid_traffic",
                    field,
                    format!("{part:?} should look like VERSION=PERCENT, e.g. v1=90"),
                )
            })?;
            let percent = percent.trim().parse::<u32>().map_err(|_| {
                ModelError::invalid(
                    "invalid_traffic",
                    field,
                    format!("{percent:?} in {part:?} is not a whole percent"),
                )
            })?;
            Ok(TrafficTarget {
                version: version.trim().to_string(),
                percent,
            })
        })
        .collect()
}

/// Parses the CLI's rule syntax `NAME=VALUE:VERSION`, e.g. `env=beta:v3` or `x-canary=1:v2`.
pub fn parse_rule(source: MatchSource, text: &str) -> Result<RouteRule, ModelError> {
    let field = "traffic.rules";
    let bad = || {
        ModelError::invalid(
            "invalid_rule",
            field,
            format!("{text:?} should look like NAME=VALUE:VERSION, e.g. env=beta:v3"),
        )
    };
    let (matcher, version) = text.rsplit_once(':').ok_or_else(bad)?;
    let (name, value) = matcher.split_once('=').ok_or_else(bad)?;
    if name.trim().is_empty() || version.trim().is_empty() {
        return Err(bad());
    }
    let name = match source {
        MatchSource::Header => name.trim().to_ascii_lowercase(),
        MatchSource::Query => name.trim().to_string(),
    };
    Ok(RouteRule {
        matcher: RuleMatch {
            source,
            name,
            value: value.to_string(),
        },
        version: version.trim().to_string(),
    })
}

#[cfg(test)]
mod tests;
