//! decree-tools: the replica server, the client protocol and Rust client library, and the pieces
//! of the `decree` CLI that other programs and tests reuse.

pub mod auth;
pub mod bench_baseline;
pub mod client;
pub mod cluster_file;
pub mod config;
pub mod replica;
pub mod secret;
pub mod wire;
