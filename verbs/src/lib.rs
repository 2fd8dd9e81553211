//! decree-verbs (being built; see the issues).
