//! The Nimbus resource model: namespaces, services, versions and instances; their names, limits
//! and defaults; the traffic policy and its evaluation; generated domains.
//!
//! Everything here is pure: no I/O, no clocks, no randomness (callers pass a dice roll in). The
//! API validates with these functions before it writes anything, and the gateway routes with them.
//!
//! # Layout
//! - [`error`]: the one error shape every layer maps to `{"error": {code, message, field}}`.
//! - [`names`]: DNS-label rules for namespace, service and version names.
//! - [`spec`]: a version's spec (command or image, env, port, limits, container resources and
//!   volumes) with defaults and validation; size (`256Mi`) and `NAME:/path` parsing.
//! - [`function`]: what makes a version a function (runtime, handler, memory, timeout).
//! - [`traffic`]: the traffic policy (percent split + ordered rules), validation, evaluation,
//!   explanation, and the CLI's `v1=90,v2=10` / `k=v:version` syntax.
//! - [`glob`]: the `*` glob used by traffic rules.
//! - [`gateway`]: a service's gateway policy (balancing, affinity, limits, access rules) as data.
//! - [`domains`]: generated hosts, custom domain validation, `Host` header normalisation.
//! - [`status`]: live instance/version status shared by the reconciler, API and CLI.

#![forbid(unsafe_code)]

pub mod domains;
pub mod error;
pub mod function;
pub mod gateway;
pub mod glob;
pub mod names;
pub mod spec;
pub mod status;
pub mod traffic;

pub use error::{ErrorKind, ModelError};
pub use gateway::GatewaySpec;
pub use spec::{
    BuildInfo, ByteSize, Runtime, ScalingInput, ScalingUpdate, VersionInput, VersionSpec,
    VolumeMount,
};
pub use traffic::{Decision, RequestView, RouteRule, RuleMatch, TrafficPolicy, TrafficTarget};

/// The namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "default";
/// A service keeps at most this many versions (CloudBase Run's limit).
pub const MAX_VERSIONS_PER_SERVICE: usize = 10;
