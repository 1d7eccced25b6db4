//! Raw → validated configuration; every error carries its YAML path.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, ConfigError};

/// Parses, interpolates, overlays and validates configuration text.
pub(super) fn load(
    text: &str,
    origin: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let _ = (text, vars);
    Err(ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: "not implemented".into(),
    })
}
