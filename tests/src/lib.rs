//! Ferry's test support crate.
//!
//! Holds what the conformance suite and the end-to-end tests share, starting with
//! [`server`]: a real HTTP/1.1 server on loopback that a test starts, scripts and
//! inspects, so transfers are exercised against real sockets instead of mocks;
//! and [`daemon`]: a real `ferry daemon` in a temporary directory, driven through
//! the real CLI; [`tls_server`]: the same server over HTTPS (HTTP/1.1 or
//! HTTP/2) with a certificate authority made by the test; [`users`]: throw-away
//! Unix users and groups for the tests where another user is the attacker;
//! [`nginx`]: nginx on loopback, the benchmarks' server; [`bench`]: the benchmarks'
//! settings and peer programs.

pub mod bench;
pub mod bits_server;
pub mod daemon;
pub mod fixtures;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod tls_server;
pub mod tus;
pub mod users;
