//! decree-bench (being built; see the issues).
