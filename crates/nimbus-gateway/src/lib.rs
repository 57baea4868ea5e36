//! The Nimbus gateway: the HTTP front door. It routes each request by host to a service (or a
//! pinned version), applies the service's traffic policy, balances across the version's ready
//! instances and proxies to one over pooled keep-alive connections, streaming bodies both ways and
//! tunnelling upgrades such as WebSockets.
//!
//! The gateway never reads the store: it serves an immutable [`RouteTable`] snapshot that the
//! reconciler builds and hands over with [`Gateway::swap`].
//!
//! # Layout
//! - [`route`]: the route table types and the pure routing choice, [`RouteTable::choose`].
//! - [`error`]: [`GatewayError`], its source, status code and JSON body.
//! - `proxy`: the life of a request (identify, choose, rewrite, forward, respond).
//! - [`body`]: the response body that streams upstream bytes and releases in-flight counts.
//! - `server`: [`Gateway`], its configuration and the accept loop.

#![forbid(unsafe_code)]

pub mod body;
pub mod error;
mod proxy;
pub mod route;
mod server;

pub use error::{ErrorSource, GatewayError};
pub use route::{
    Choice, Endpoint, HostRoute, InflightGuard, RouteTable, ServiceRoute, VersionRoute,
};
pub use server::{Gateway, GatewayConfig};
