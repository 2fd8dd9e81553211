//! Code contracts: named pre/postconditions and invariants checked in every handler. They are
//! plain `assert!`s, kept in release builds because they guard safety; a violation panics with the
//! contract's name so a simulation failure says what broke.

/// Panics with `contract violated: <name>` (and context) unless `cond` holds.
#[macro_export]
macro_rules! contract {
    ($self:ident, $cond:expr, $name:literal) => {
        if $self.contracts_enabled() && !($cond) {
            panic!(concat!("contract violated: ", $name, " (replica {})"), $self.id());
        }
    };
    ($self:ident, $cond:expr, $name:literal, $($arg:tt)+) => {
        if $self.contracts_enabled() && !($cond) {
            panic!("contract violated: {} (replica {}): {}", $name, $self.id(), format_args!($($arg)+));
        }
    };
}
