//! `${VAR}` interpolation and the `SWITCHYARD_*` overlay.

use std::collections::BTreeMap;

/// The process environment as a map (read once per load; never modified).
pub(super) fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}
