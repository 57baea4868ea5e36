//! Nimbus functions: the parts of event-driven functions that do not depend on the server.
//!
//! A function is a service underneath (same versions, autoscaler, gateway) whose instances run
//! one invocation at a time. An instance is an HTTP server on `127.0.0.1:$PORT` started by a
//! runtime shim (`runtimes/python/nimbus_shim.py`, `runtimes/node/nimbus_shim.js`) or by the
//! user's own binary, speaking the invoke protocol of `docs/functions.md`. This crate owns
//! that protocol's engine side and the decisions around it; it never starts processes and never
//! reads the server store (the server wires it in).
//!
//! # Layout
//! - [`handler`]: `--runtime` / `--handler` validation and the [`LaunchCommand`] that starts an
//!   instance.
//! - [`invoke`]: the [`InvokeClient`] that POSTs an event to an instance and classifies the
//!   answer as an [`InvokeOutcome`].
//! - [`queue`]: the durable async [`InvocationQueue`] in SQLite (claim with lease, retries,
//!   dead-letter, timer fire records).
//! - [`retry`]: the pure [`RetryPolicy`] (attempts, exponential backoff).
//! - [`cron`]: when a timer trigger fires ([`due_fires`]), at most once per missed period.
//! - [`cloudevents`]: CloudEvents 1.0 JSON for timer and object storage events.
//! - [`trigger`]: which object changes a storage trigger reacts to.
//! - [`alias`]: weighted aliases (`live v1=90,v2=10`) and the pure pick.
//!
//! Everything except `invoke` (sockets) and `queue` (SQLite) is pure and takes the time or the
//! dice roll from the caller.

#![forbid(unsafe_code)]

pub mod alias;
pub mod cloudevents;
pub mod cron;
pub mod handler;
pub mod invoke;
pub mod queue;
pub mod retry;
pub mod trigger;

pub use alias::{Alias, AliasError, AliasRoute};
pub use cloudevents::{object_event, timer_fired, CloudEvent, ObjectChange, TimerFire};
pub use cron::{due_fires, next_fire, parse_cron};
pub use handler::{launch_command, Handler, HandlerError, LaunchCommand, Runtime};
pub use invoke::{
    over_memory, ErrorKind, FunctionError, HandlerError as InvokeHandlerError, InvokeClient,
    InvokeOutcome, InvokeRequest,
};
pub use queue::{
    Claim, Completion, Invocation, InvocationQueue, InvocationStatus, ListFilter, NewInvocation,
    QueueError,
};
pub use retry::{RetryDecision, RetryPolicy};
pub use trigger::{ObjectEventKind, StorageTrigger, TriggerError};
