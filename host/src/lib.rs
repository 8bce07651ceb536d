//! Ferry: a background file-transfer host with the job semantics of BITS,
//! whose transports are sandboxed WebAssembly components.
//!
//! - `job`: the job model and its state machine (SPEC §2), as data;
//! - `engine`: carries jobs out: operations, transfers, checkpoints, timers;
//! - `scheduler`: which queued jobs transfer now; `clock`: time for timers;
//! - `store`: where jobs live across restarts (sled by default);
//! - `events`: the in-process event stream of every job;
//! - `daemon`: `ferry daemon`; `config`: its configuration and paths;
//! - `api`: the local API over a Unix socket; `identity`: acting for a user;
//! - `notify`: the notify command, run as the job's owner;
//! - `cli`: the `ferry` command line, a client of the API;
//! - `conformance`: the plugin conformance suite (`ferry plugin test`);
//! - `commit`: group commit, the engine's durable writes shared by callers;
//! - `blocking`: blocking calls (file writes, durable waits) off the async workers;
//! - `error`: the typed error every failed transfer ends in;
//! - `metrics`: what an operator graphs, as Prometheus text;
//! - `files`: temporary files and their atomic, symlink-proof finalisation;
//! - `plugin`: the plugin runtime (WIT bindings, sandbox, network, streams).

pub mod api;
pub mod blocking;
pub mod cli;
pub mod clock;
pub mod commit;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod events;
pub mod files;
pub mod identity;
pub mod job;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod scheduler;
pub mod store;

pub use error::{ErrorClass, ErrorContext, TransferError};
