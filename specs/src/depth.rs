//! How large the models are checked: quick bounds in every `cargo test`,
//! deep bounds on request.
//!
//! Guarantee: [`Depth::from_env`] is the one switch every model reads.

/// Set to `1` to check the larger bounds of [`Depth::Deep`].
pub const DEEP_ENV_VAR: &str = "FLOTILLA_SPECS_DEEP";

/// How large the models are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// The bounds `cargo test` checks.
    Quick,
    /// Larger bounds, for `FLOTILLA_SPECS_DEEP=1 cargo test -p specs --release`.
    Deep,
}

impl Depth {
    /// [`Depth::Deep`] if the environment variable [`DEEP_ENV_VAR`] is `1`.
    pub fn from_env() -> Depth {
        match std::env::var(DEEP_ENV_VAR) {
            Ok(value) if value == "1" => Depth::Deep,
            _ => Depth::Quick,
        }
    }
}
