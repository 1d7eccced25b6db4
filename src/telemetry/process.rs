//! The standard `process_*` series of Prometheus clients, read from `/proc/self` at each
//! scrape: CPU time, resident memory, open and allowed file descriptors, and start time.
//!
//! Rendered as text beside the recorder's output rather than through it, so each keeps its
//! Prometheus type (CPU seconds are a fractional counter, which `metrics` counters are not).
//! Where `/proc` cannot be read (not Linux) the series are left out.

use std::fs;

/// The names of the process series, as rendered.
pub const PROCESS_METRICS: [&str; 5] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// The process series in the Prometheus text format; empty where `/proc` cannot be read.
pub fn render_process() -> String {
    let mut out = String::new();
    let stat = fs::read_to_string("/proc/self/stat").ok();
    let times = stat.as_deref().and_then(cpu_and_start);
    if let Some((cpu, start)) = times {
        let help = "Total user and system CPU time spent in seconds.";
        sample(&mut out, PROCESS_METRICS[0], "counter", help, cpu);
        if let Some(boot) = boot_time() {
            let help = "Start time of the process since unix epoch in seconds.";
            sample(&mut out, PROCESS_METRICS[4], "gauge", help, boot + start);
        }
    }
    if let Some(rss) = resident_bytes() {
        let help = "Resident memory size in bytes.";
        sample(&mut out, PROCESS_METRICS[1], "gauge", help, rss);
    }
    if let Ok(dir) = fs::read_dir("/proc/self/fd") {
        let help = "Number of open file descriptors.";
        sample(
            &mut out,
            PROCESS_METRICS[2],
            "gauge",
            help,
            dir.count() as f64,
        );
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(limit) = limit {
            let help = "Maximum number of open file descriptors.";
            sample(&mut out, PROCESS_METRICS[3], "gauge", help, limit as f64);
        }
    }
    out
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// CPU seconds (user and system) and the start time in seconds after boot, from
/// `/proc/self/stat`: fields 14, 15 and 22, counted after the command name, which may itself
/// hold spaces and parentheses.
fn cpu_and_start(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    let cpu = (ticks(11)? + ticks(12)?) as f64 / per_second;
    Some((cpu, ticks(19)? as f64 / per_second))
}

/// The boot time in unix seconds (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find_map(|l| l.strip_prefix("btime "))?;
    line.trim().parse().ok()
}

/// Resident pages (the second field of `/proc/self/statm`) in bytes.
fn resident_bytes() -> Option<f64> {
    let statm = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * rustix::param::page_size() as u64) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 1000 1 2";
        let (cpu, start) = cpu_and_start(stat).expect("parsed");
        assert_eq!(cpu, 200.0 / ticks);
        assert_eq!(start, 1000.0 / ticks);
    }

    #[test]
    fn every_process_series_is_rendered_on_linux() {
        let text = render_process();
        for name in PROCESS_METRICS {
            assert!(text.contains(&format!("\n{name} ")), "{name} in:\n{text}");
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }
}
