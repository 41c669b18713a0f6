//! The integration tests, in one test binary (one link of diesel, hyper and the AWS SDK instead of one per file).
//!
//! Every module talks to a real PostgreSQL: the first test to need one starts a private cluster ([`common`]),
//! shared by the whole binary, and each test gets a fresh database cloned from a migrated template.
//! [`common::TestApp`] starts the service in-process; tests of the binary as an operator runs it spawn
//! `CARGO_BIN_EXE_coworking-analytics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_support;
mod common;
mod metrics_support;
mod raw_http;

mod access;

mod bad_input;
mod cli;
mod config;
mod consistency;
mod cors;
mod deltas;
mod detached;
mod detached_recount;
mod faults;
mod formats;
mod frozen_writer;
mod h2;
mod hostile;
mod http;
mod https;
mod incremental;
mod layers;
mod metrics;
mod metrics_formats;
mod migrations;
mod outage;
mod partitions;
mod pgbouncer;
mod pgpool;
mod privilege;
mod process;
mod readers;
mod rebuild;
mod replicas;
mod reports;
mod runner;
mod serving;
mod shared_cache;
mod shutdown;
mod slices;
mod tls;
mod tokens;
mod verify;
mod writers;
mod zones;
