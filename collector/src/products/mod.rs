//! What is particular to each product on the collector's side: decoding
//! its own wire messages into rows. Everything every product sends
//! (metrics, events, health) is decoded in [`crate::ingest::convert`].
//!
//! A new product adds `products/<product>.rs` (its decoding), its rows'
//! file under `store/sqlite/`, its read trait in [`crate::store`], and one
//! arm where payloads are dispatched (`ingest::convert::payload_from_wire`
//! and the sink's `store_payload`); never the ingest loop or the sink's
//! core. Like [`crate::ingest`], these modules may see prost types.

pub mod db;
pub mod infra;
pub mod logs;
pub mod url;
