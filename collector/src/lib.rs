//! The Sightline collector: gRPC ingest for agents, the license check, the
//! embedded store, and the JSON query API.
//!
//! The path of a batch: [`ingest`] authenticates the `Push` stream by its
//! license, converts each wire batch into a [`model::IncomingBatch`]
//! ([`products`] decodes each product's own messages), and hands it to the
//! group-commit writer ([`store::group`]), which stores many streams'
//! batches with their `(oid, instance, seq)` records in one call of
//! [`store::BatchSink::store_batches`]; only then is each ack sent. [`api`]
//! reads the same store, scoped to the bearer token's project; [`console`]
//! serves the web console over it. [`alerts`]
//! evaluates rules over what is stored and sends notifications.
//!
//! Invariants:
//! - Only [`ingest`] and [`products`] see prost types; only [`store`]
//!   writes SQL.
//! - One project's token never reads another project's data.
//! - No input from the network can stop the collector serving others:
//!   connection caps, a deadline on first bytes, size limits on messages
//!   (decompressed too), header timeouts.
//! - Secrets (licenses, tokens) are stored hashed and never logged whole.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod console;
pub mod fleet;
pub mod ingest;
pub mod listen;
pub mod log_limit;
pub mod logs;
pub mod model;
pub mod products;
pub mod server;
pub mod settings;
pub mod store;
pub mod time_text;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
