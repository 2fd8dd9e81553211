//! The protocol core.

pub mod io;
