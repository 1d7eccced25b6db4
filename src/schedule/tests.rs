//! Unit tests: `schedules:` validation, tick arithmetic across time zones, catch-up selection,
//! the emitted event and the state file.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Berlin;

use super::state::{self, StateError, TickStore};
use super::tick::{event_at, missed_tick, next_tick};
use crate::config::{self, ConfigError, FieldError, ScheduleConfig};

fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<config::Config, ConfigError> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    config::load_str(yaml, Path::new("routes.yaml"), &vars)
}

fn errors(yaml: &str) -> Vec<FieldError> {
    match load(yaml, &[]) {
        Err(ConfigError::Invalid(errors)) => errors,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn assert_error(errors: &[FieldError], path: &str, fragment: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "no error at {path} containing {fragment:?} in {errors:#?}"
    );
}

fn schedule(cron: &str, timezone: &str, catch_up: bool) -> ScheduleConfig {
    let yaml = format!(
        "schedules: [{{ name: s, cron: '{cron}', timezone: {timezone}, catch_up: {catch_up}, \
         event: {{ type: T, source: /s }} }}]"
    );
    let mut config = load(&yaml, &[]).expect("valid schedule");
    config.schedules.remove(0)
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

// === Validation ===

#[test]
fn a_full_schedule_is_read_with_defaults_and_interpolated_data() {
    let yaml = "
schedules:
  - name: daily-report
    cron: '0 0 6 * * *'
    event:
      type: Contoso.Reports.DailyDue
      source: /switchyard/schedules
      subject: reports/daily
      data: { region: '${REGION}', days: [1, 2], nested: { on: true }, none: ~ }
  - { name: bare, cron: '*/5 * * * * *', timezone: Europe/Berlin, catch_up: true,
      event: { type: T, source: /s } }
";
    let config = load(yaml, &[("REGION", "eu")]).expect("valid");
    let [daily, bare] = &config.schedules[..] else {
        panic!("two schedules expected: {:?}", config.schedules);
    };
    assert_eq!(daily.name, "daily-report");
    assert_eq!(daily.timezone, chrono_tz::UTC);
    assert!(!daily.catch_up);
    assert_eq!(daily.event.ty, "Contoso.Reports.DailyDue");
    assert_eq!(daily.event.subject.as_deref(), Some("reports/daily"));
    let data =
        serde_json::json!({"region": "eu", "days": [1, 2], "nested": {"on": true}, "none": null});
    assert_eq!(daily.event.data, Some(data));
    assert_eq!(bare.timezone, Berlin);
    assert!(bare.catch_up);
    assert_eq!(
        (bare.event.subject.as_ref(), bare.event.data.as_ref()),
        (None, None)
    );
}

#[test]
fn cron_expressions_need_six_fields_seconds_first() {
    let errors = errors(
        "
schedules:
  - { name: five, cron: '0 6 * * *', event: { type: T, source: /s } }
  - { name: seven, cron: '0 0 6 * * * 2030', event: { type: T, source: /s } }
  - { name: range, cron: '0 61 * * * *', event: { type: T, source: /s } }
  - { name: junk, cron: 'a b c d e f', event: { type: T, source: /s } }
  - { name: nick, cron: '@daily', event: { type: T, source: /s } }
",
    );
    assert_error(&errors, "schedules[0].cron", "found 5 field(s)");
    assert_error(&errors, "schedules[1].cron", "found 7 field(s)");
    assert_error(&errors, "schedules[2].cron", "invalid cron");
    assert_error(&errors, "schedules[3].cron", "invalid cron");
    assert_error(&errors, "schedules[4].cron", "found 1 field(s)");
    for e in &errors {
        assert!(e.message.contains("six fields, seconds first"), "{e}");
    }
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn every_schedule_error_is_reported_with_its_path() {
    let errors = errors(
        "
schedules:
  - { name: a, cron: '* * * * * *', timezone: Europe/Berln, event: { type: T, source: /s } }
  - { name: a, cron: '* * * * * *', catch_up: maybe, event: { subject: x, colour: red } }
  - { cron: '* * * * * *', every: 1s }
  - just-a-string
",
    );
    assert_error(
        &errors,
        "schedules[0].timezone",
        "unknown time zone `Europe/Berln`",
    );
    assert_error(
        &errors,
        "schedules[1].name",
        "duplicate schedule name `a` (first at schedules[0].name)",
    );
    assert_error(&errors, "schedules[1].catch_up", "expected true or false");
    assert_error(&errors, "schedules[1].event.type", "required");
    assert_error(&errors, "schedules[1].event.source", "required");
    assert_error(
        &errors,
        "schedules[1].event.colour",
        "unknown key (allowed here: type, source, subject, data)",
    );
    assert_error(&errors, "schedules[2].name", "required");
    assert_error(&errors, "schedules[2].event", "required");
    assert_error(&errors, "schedules[2].every", "unknown key");
    assert_error(&errors, "schedules[3]", "expected a mapping");
    assert_eq!(errors.len(), 10, "{errors:#?}");
}

#[test]
fn unset_variables_in_data_are_reported_where_they_are() {
    let errors = errors(
        "schedules: [{ name: a, cron: '0 0 * * * *', event: { type: T, source: /s, data: { k: [x, '${NOPE}'] } } }]",
    );
    assert_error(&errors, "schedules[0].event.data.k[1]", "NOPE is not set");
}

// === Ticks ===

#[test]
fn next_tick_is_the_next_whole_second_strictly_after() {
    let every_second = schedule("* * * * * *", "UTC", false);
    let now = utc("2024-05-01T12:00:00.300Z");
    assert_eq!(
        next_tick(&every_second, now),
        Some(utc("2024-05-01T12:00:01Z"))
    );
    let on_the_dot = utc("2024-05-01T12:00:01Z");
    assert_eq!(
        next_tick(&every_second, on_the_dot),
        Some(utc("2024-05-01T12:00:02Z"))
    );
}

#[test]
fn next_tick_follows_the_time_zone_across_daylight_saving_changes() {
    let six = schedule("0 0 6 * * *", "Europe/Berlin", false);
    // CET (+01:00) until 2024-03-31 02:00, CEST (+02:00) after; back on 2024-10-27.
    let ticks = [
        ("2024-03-30T00:00:00Z", "2024-03-30T05:00:00Z"),
        ("2024-03-30T12:00:00Z", "2024-03-31T04:00:00Z"),
        ("2024-10-26T12:00:00Z", "2024-10-27T05:00:00Z"),
    ];
    for (after, expected) in ticks {
        assert_eq!(
            next_tick(&six, utc(after)),
            Some(utc(expected)),
            "after {after}"
        );
    }
}

#[test]
fn a_tick_inside_the_spring_gap_or_the_autumn_overlap_fires_once() {
    let half_two = schedule("0 30 2 * * *", "Europe/Berlin", false);
    let ticks_after = |start: &str| {
        let first = next_tick(&half_two, utc(start)).expect("a tick");
        let second = next_tick(&half_two, first).expect("a tick");
        [first, second]
    };
    // 02:30 does not exist on 2024-03-31: that day's tick moves past the gap to 03:00 CEST.
    let spring = ticks_after("2024-03-30T12:00:00Z");
    assert_eq!(
        spring,
        [utc("2024-03-31T01:00:00Z"), utc("2024-04-01T00:30:00Z")]
    );
    // 02:30 happens twice on 2024-10-27 (CEST, then CET); the schedule fires at the first.
    let autumn = ticks_after("2024-10-26T12:00:00Z");
    assert_eq!(
        autumn,
        [utc("2024-10-27T00:30:00Z"), utc("2024-10-28T01:30:00Z")]
    );
}

#[test]
fn an_expression_that_never_fires_is_refused_and_leap_days_are_not() {
    let errors =
        errors("schedules: [{ name: a, cron: '0 0 0 30 2 *', event: { type: T, source: /s } }]");
    assert_error(&errors, "schedules[0].cron", "never fires");
    let leap = schedule("0 0 12 29 2 *", "UTC", false);
    let next = next_tick(&leap, utc("2025-01-01T00:00:00Z"));
    assert_eq!(next, Some(utc("2028-02-29T12:00:00Z")));
}

// === Catch-up ===

#[test]
fn catch_up_emits_only_the_latest_missed_tick() {
    let minutely = schedule("0 * * * * *", "UTC", true);
    let now = utc("2024-05-01T12:05:30.5Z");
    let last = Some(utc("2024-05-01T12:01:00Z"));
    assert_eq!(
        missed_tick(&minutely, last, now),
        Some(utc("2024-05-01T12:05:00Z"))
    );
    let every_second = schedule("* * * * * *", "UTC", true);
    let three_ago = Some(utc("2024-05-01T12:05:27Z"));
    assert_eq!(
        missed_tick(&every_second, three_ago, now),
        Some(utc("2024-05-01T12:05:30Z"))
    );
    // A tick exactly at `now` counts as missed.
    let at_tick = utc("2024-05-01T12:05:00Z");
    assert_eq!(missed_tick(&minutely, last, at_tick), Some(at_tick));
}

#[test]
fn nothing_is_caught_up_when_off_unrecorded_or_nothing_was_missed() {
    let now = utc("2024-05-01T12:05:30Z");
    let last = Some(utc("2024-05-01T12:01:00Z"));
    let off = schedule("0 * * * * *", "UTC", false);
    assert_eq!(missed_tick(&off, last, now), None);
    let on = schedule("0 * * * * *", "UTC", true);
    assert_eq!(missed_tick(&on, None, now), None);
    let current = Some(utc("2024-05-01T12:05:00Z"));
    assert_eq!(missed_tick(&on, current, now), None);
}

// === The event ===

#[test]
fn each_tick_emits_the_configured_event_with_a_stable_id() {
    let yaml = "schedules: [{ name: nightly, cron: '0 0 2 * * *', timezone: Europe/Berlin, \
                event: { type: T, source: /s, subject: sub, data: { n: 1 } } }]";
    let nightly = load(yaml, &[]).expect("valid").schedules.remove(0);
    let tick = Berlin
        .with_ymd_and_hms(2024, 5, 1, 2, 0, 0)
        .single()
        .expect("one local time")
        .with_timezone(&Utc);
    let event = event_at(&nightly, tick);
    assert_eq!(event.id, "nightly-2024-05-01T00:00:00Z");
    assert_eq!(event.time.as_deref(), Some("2024-05-01T00:00:00Z"));
    assert_eq!(
        (
            event.specversion.as_str(),
            event.ty.as_str(),
            event.source.as_str()
        ),
        ("1.0", "T", "/s")
    );
    assert_eq!(event.subject.as_deref(), Some("sub"));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(event.data.as_deref(), Some(&b"{\"n\":1}"[..]));
    assert_eq!(
        event_at(&nightly, tick),
        event,
        "the same tick gives the same event"
    );

    let bare = schedule("* * * * * *", "UTC", false);
    let event = event_at(&bare, tick);
    assert_eq!(
        (event.data, event.datacontenttype, event.subject),
        (None, None, None)
    );
}

// === State file ===

#[tokio::test]
async fn recorded_ticks_survive_a_reload_and_leave_no_temporary_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spool").join(state::FILE_NAME);
    assert!(state::load(&path)
        .await
        .expect("missing reads as empty")
        .is_empty());

    let store = TickStore::new(path.clone(), BTreeMap::new());
    store
        .record("a", utc("2024-05-01T12:00:00Z"))
        .await
        .expect("written");
    store
        .record("b", utc("2024-05-01T12:00:05Z"))
        .await
        .expect("written");
    store
        .record("a", utc("2024-05-01T12:01:00Z"))
        .await
        .expect("written");

    let ticks = state::load(&path).await.expect("readable");
    assert_eq!(ticks.get("a"), Some(&utc("2024-05-01T12:01:00Z")));
    assert_eq!(ticks.get("b"), Some(&utc("2024-05-01T12:00:05Z")));
    let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("listable")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [state::FILE_NAME]);
}

#[tokio::test]
async fn an_unreadable_state_file_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(state::FILE_NAME);
    std::fs::write(&path, "not json").expect("written");
    assert!(matches!(
        state::load(&path).await,
        Err(StateError::Format { .. })
    ));
    std::fs::write(&path, r#"{"version": 9, "last_ticks": {}}"#).expect("written");
    assert!(matches!(
        state::load(&path).await,
        Err(StateError::Version { found: 9, .. })
    ));
}
