//! Integration tests: the real daemon on 127.0.0.1:0 against real HTTP sink servers.

mod support;

mod admin;
mod admin_guard;
mod backpressure;
mod bounded;
mod cesql;
mod cli;
mod cli_json;
mod connections;
mod dead_letters;
mod delivery;
mod delivery_control;
mod deploy;
mod disk_full;
mod durability_kill9;
mod examples;
mod hostile;
mod hostile_events;
mod ingress;
mod leases;
mod otlp;
mod outbound_tls;
mod pause;
mod priority;
mod readiness;
mod reload;
mod schedules;
mod signatures;
mod sink_nats;
mod sinks;
mod sources;
mod spool_nats;
mod spool_repair;
mod telemetry;
mod tls;
