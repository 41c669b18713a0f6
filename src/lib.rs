//! coworking-analytics: precomputed coworking usage reports.
//!
//! The data path, module by module:
//! `tokens`/`users` (base tables, change capture by triggers) -> [`refresh`] (one transaction, run by the
//! [`worker`] as soon as its 100 ms check finds a captured change, the schedule as the backstop) -> rollup tables
//! and the delta log ([`db`]) -> [`cache`] (on every replica, written only by its [`follower`]: immutable
//! snapshots of chunked, compressed bodies, swapped atomically; it answers each request with a representation,
//! the [`dashboard`] page included) -> [`http`] (routing, negotiation, validators, headers).
//! [`report`] holds the words all of them share: the report kinds, rows, changes, bodies and parameters.
//! [`app`] wires them together for `serve`; [`config`] and [`logging`] are read by all of them; [`metrics`]
//! branch off the worker and the server.
//!
//! The `dev-tools` feature (on by default, off in the container image's build) adds what only a developer
//! needs: [`pgtemp`] (a throw-away PostgreSQL), [`demo`] with its embedded SQL, and the reference queries and
//! renderers the tests compare against.

pub mod access;
pub mod app;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod db;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod follower;
pub mod http;
pub mod logging;
pub mod memory;
pub mod metrics;
#[cfg(feature = "dev-tools")]
pub mod pgtemp;
pub mod refresh;
pub mod report;
pub mod schema;
pub mod seed;
pub mod worker;
