//! The JSON Schema of `routes.yaml` (`schema/routes.schema.json`, draft-07), embedded so that
//! `switchyard schema` prints the schema of the running version. Editors read it for
//! completion, hover docs and checks as you type; `switchyard check` stays the authority on
//! what a schema cannot express (sink names, files, CESQL, cron expressions, secrets).
//!
//! Tests in `schema_tests` keep its keys equal to the loader's. Imports nothing internal.

/// The JSON Schema (draft-07) of `routes.yaml`, as `switchyard schema` prints it.
pub const SCHEMA: &str = include_str!("../../schema/routes.schema.json");
