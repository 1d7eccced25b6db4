//! Dispatch tests: the pure retry rules, and the dispatcher against the memory spool and
//! real local sink servers.

mod batch;
mod dead_letter;
mod retry;
mod worker;
