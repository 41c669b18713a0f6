//! coworking-analytics: precomputed coworking usage reports.
//!
//! The data path, module by module:
//! `tokens`/`users` (base tables) -> [`refresh`] (one transaction, run by the [`worker`] on a schedule) ->
//! rollup tables ([`db`]) -> [`cache`] (rendered and compressed bodies and the [`dashboard`] page, swapped
//! atomically, on every replica, kept current by the [`follower`]) -> [`http`].
//! [`formats`] has the reports' other bodies (periods, occupancy, CSV).
//! [`app`] wires them together for `serve`; [`config`] and [`logging`] are read by all of them; [`metrics`]
//! branch off the worker and the server.
//!
//! The `dev-tools` feature (on by default, off in the container image's build) adds what only a developer
//! needs: [`pgtemp`] (a throw-away PostgreSQL), [`demo`] with its embedded SQL, and the reference queries and
//! renderers the tests compare against.

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
pub mod formats;
pub mod http;
pub mod logging;
pub mod metrics;
#[cfg(feature = "dev-tools")]
pub mod pgtemp;
pub mod refresh;
pub mod report;
pub mod schema;
pub mod seed;
pub mod worker;
