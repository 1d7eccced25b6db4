//! Raw serde structs mirroring the YAML (`deny_unknown_fields`); no logic.
