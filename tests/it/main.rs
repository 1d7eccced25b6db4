//! Integration tests: the real daemon on 127.0.0.1:0 against real HTTP sink servers.

mod support;

mod cli;
mod delivery;
mod ingress;
mod sinks;
