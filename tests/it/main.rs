//! Integration tests: the real daemon on 127.0.0.1:0 against real HTTP sink servers.

mod support;

mod admin;
mod backpressure;
mod cli;
mod dead_letters;
mod delivery;
mod delivery_control;
mod durability_kill9;
mod hostile;
mod ingress;
mod otlp;
mod priority;
mod reload;
mod schedules;
mod signatures;
mod sink_nats;
mod sinks;
mod spool_nats;
mod telemetry;
