//! Sink tests, against real local servers, files and processes.

mod classify;
mod exec;
mod file;
mod handler;
mod http;
mod log;
mod sign;
pub(crate) mod support;
