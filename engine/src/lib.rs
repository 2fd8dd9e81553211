//! decree-engine: the multi-Paxos protocol core of decree and its deterministic simulator.
//!
//! The core is a pure state machine, [`core::Replica`]: `step(now_ms, input) -> commands`. It never
//! touches a clock, socket, file or thread, which is what lets the [`sim`] run thousands of seeded
//! fault schedules and replay any one of them exactly.

pub mod applier;
pub mod batch;
pub mod chunk_arena;
pub mod codec;
pub mod core;
pub mod durable;
pub mod flat_table;
pub mod kv;
pub mod kv_map;
pub mod membership;
pub mod message;
pub mod runtime;
pub mod sim;
pub mod state_machine;
pub mod types;
