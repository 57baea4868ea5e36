//! The Nimbus gateway: the HTTP front door. It routes each request by host to a service (or a
//! pinned version), applies the service's traffic policy, admits the request to one of the
//! version's ready instances (a concurrency limit per instance, least-outstanding choice, a FIFO
//! queue when all are busy, and holding requests while a version starts from zero), and proxies
//! to it over pooled keep-alive connections, streaming bodies both ways and tunnelling upgrades
//! such as WebSockets. HTTP/1.1 requests without a body are served by its own server loop;
//! hyper serves the rest and HTTP/2.
//!
//! The gateway never reads the store: it serves an immutable [`RouteTable`] snapshot that the
//! reconciler builds and hands over with [`Gateway::swap`]. The state that must outlive a swap
//! lives in one [`VersionGate`] per version, which the reconciler keeps and updates with the
//! ready instances and limits ([`VersionGate::update`]).
//!
//! # Layout
//! - [`route`]: the route table types and the pure routing choice, [`RouteTable::choose`]
//!   (host → service → version).
//! - [`gate`]: [`VersionGate`], admission to a version's instances: the pure instance choice
//!   [`gate::pick`], the FIFO queue, the activator hook and the [`Permit`] that holds a slot.
//! - [`chooser`]: the balancing algorithm run by each gate over instances with a free slot.
//! - [`policy`]: [`ServicePolicy`], a service's compiled gateway policy (access rules, rate
//!   limits, body and time limits, affinity, balancing, upstream protocol, ejection).
//! - [`outlier`]: passive health, the pure ejection record of each instance.
//! - [`balance`], [`ratelimit`], [`access`]: the pure building blocks the policy uses.
//! - [`error`]: [`GatewayError`], its source, status code and JSON body.
//! - `proxy`: the life of a request (identify, choose, admit, rewrite, forward, respond).
//! - [`body`]: the response body that streams upstream bytes and holds the permit until done.
//! - [`observe`]: [`RequestRecord`] and the [`RequestObserver`] told about each finished request
//!   (metrics, metering, access log).
//! - `server`: [`Gateway`], its configuration, the accept loops (plain and TLS) and the drain.
//! - `h1`: the gateway's own HTTP/1.1 server loop for requests without a body, and the
//!   hand-off of a connection to hyper for everything else.
//! - `timer`: the one lazily re-armed timer each client connection waits on.
//! - `upstream`: the upstream HTTP/1.1 connection each client connection keeps.
//! - [`tls`]: the HTTPS listener's certificates by SNI, PEM parsing, the self-signed default.

#![forbid(unsafe_code)]

pub mod access;
pub mod balance;
pub mod body;
pub mod chooser;
pub mod error;
pub mod gate;
mod h1;
pub mod observe;
pub mod outlier;
pub mod policy;
mod proxy;
pub mod ratelimit;
pub mod route;
mod server;
mod timer;
pub mod tls;
mod upstream;

pub use error::{ErrorSource, GatewayError};
pub use gate::{AdmitError, DemandSample, GateLimits, GateStats, Permit, Pick, VersionGate};
pub use observe::{RequestObserver, RequestRecord};
pub use policy::ServicePolicy;
pub use route::{
    Choice, Endpoint, HostRoute, InflightGuard, RouteTable, ServiceRoute, VersionRoute,
};
pub use server::{Gateway, GatewayConfig};
