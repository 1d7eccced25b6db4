//! Integration tests: the real daemon on 127.0.0.1:0 against real HTTP sink servers.

mod support;

mod admin;
mod cli;
mod delivery;
mod durability_kill9;
mod ingress;
mod schedules;
mod sinks;
mod telemetry;
