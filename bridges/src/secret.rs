//! A credential string (OAuth client secret, refresh or access token) that every provider client
//! uses: readable where it is sent, never printed (`Debug` is `<redacted>`), never in errors.

use std::fmt;

/// A secret string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The environment variable a secret was to be read from is unset or blank (names the variable,
/// never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} is not set (or empty)")]
pub struct MissingEnv {
    pub var: String,
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads the secret from environment variable `var` (surrounding whitespace dropped).
    pub fn from_env(var: &str) -> Result<Self, MissingEnv> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
            _ => Err(MissingEnv {
                var: var.to_owned(),
            }),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_a_missing_variable_is_named() {
        let s = Secret::new("s3cr3t");
        assert_eq!(s.expose(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let err = Secret::from_env("DRIFTLESS_TEST_SURELY_UNSET_SECRET").unwrap_err();
        assert!(
            err.to_string()
                .contains("DRIFTLESS_TEST_SURELY_UNSET_SECRET")
        );
    }
}
