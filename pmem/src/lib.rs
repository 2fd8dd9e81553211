//! decree-pmem (being built; see the issues).
