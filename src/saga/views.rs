//! What the admin API shows of instances: listings and one instance with its steps.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::store::Store;
use super::transition::parse;
use super::{millis, time, Phase, SagaError, State};

/// Which instances a listing selects.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    /// Only this saga's.
    pub saga: Option<String>,
    /// Only instances in this state.
    pub state: Option<State>,
    /// Only instances started at or after this time.
    pub since: Option<SystemTime>,
    /// Only instances after this cursor (a previous page's `next`).
    pub after: Option<i64>,
    /// Most instances returned.
    pub limit: usize,
}

/// An instance as the admin API shows it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    /// Its place in listings (the paging cursor).
    pub cursor: i64,
    /// Its id.
    pub id: String,
    /// Its saga.
    pub saga: String,
    /// Its state.
    pub state: State,
    /// The step (or compensation) it waits for; the last one once ended.
    pub step: String,
    /// The id of the event that started it.
    pub trigger: String,
    /// When it started.
    pub started_at: SystemTime,
    /// Its deadline.
    pub deadline: SystemTime,
    /// When it ended.
    pub finished_at: Option<SystemTime>,
    /// Why it compensated.
    pub reason: Option<String>,
    /// Compensations that were dead-lettered.
    pub failed: Vec<String>,
    /// Its steps and compensations in the order they started (empty in listings).
    pub steps: Vec<StepView>,
}

/// A step or compensation of an instance.
#[derive(Debug, Clone)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// Step or compensation.
    pub phase: Phase,
    /// The sink it went to.
    pub sink: String,
    /// When it was queued.
    pub started_at: SystemTime,
    /// When its delivery ended.
    pub finished_at: Option<SystemTime>,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status.
    pub status: Option<u16>,
    /// `delivered`, `dead-lettered` or `cancelled`; `None` while it runs.
    pub outcome: Option<String>,
    /// The dead-letter reason, or why it was cancelled.
    pub detail: Option<String>,
    /// The id of the event its sink replied.
    pub reply_id: Option<String>,
}

impl Store {
    pub(super) fn list(&mut self, q: &InstanceQuery) -> Result<Vec<InstanceView>, SagaError> {
        let mut stmt = self.conn.prepare(
            "SELECT rowid, id, saga, state, step, trigger_id, started_at, deadline, finished_at, \
             reason, failed FROM instances WHERE rowid > ?1 AND (?2 IS NULL OR saga = ?2) \
             AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR started_at >= ?4) \
             ORDER BY rowid LIMIT ?5",
        )?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![
                q.after.unwrap_or(0),
                q.saga,
                q.state.map(State::name),
                q.since.map(millis),
                limit
            ],
            view_row,
        )?;
        rows.map(|r| r?).collect()
    }

    pub(super) fn get(&mut self, id: &str) -> Result<Option<InstanceView>, SagaError> {
        let found = self
            .conn
            .query_row(
                "SELECT rowid, id, saga, state, step, trigger_id, started_at, deadline, \
                 finished_at, reason, failed FROM instances WHERE id = ?1",
                [id],
                view_row,
            )
            .optional()?;
        let Some(view) = found else { return Ok(None) };
        let mut view = view?;
        let mut stmt = self.conn.prepare(
            "SELECT name, phase, sink, started_at, finished_at, attempts, status, outcome, \
             detail, reply_id FROM steps WHERE instance = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(StepView {
                name: r.get(0)?,
                phase: match r.get::<_, String>(1)?.as_str() {
                    "compensation" => Phase::Compensate,
                    _ => Phase::Forward,
                },
                sink: r.get(2)?,
                started_at: time(r.get(3)?),
                finished_at: r.get::<_, Option<i64>>(4)?.map(time),
                attempts: r.get(5)?,
                status: r.get(6)?,
                outcome: r.get(7)?,
                detail: r.get(8)?,
                reply_id: r.get(9)?,
            })
        })?;
        view.steps = rows.collect::<Result<_, _>>()?;
        Ok(Some(view))
    }
}

/// Reads an instance row into a view (its steps left empty).
pub(super) fn view_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<InstanceView, SagaError>> {
    let state: String = r.get(3)?;
    let failed: String = r.get(10)?;
    let Some(state) = State::parse(&state) else {
        return Ok(Err(SagaError::Record(format!("unknown state `{state}`"))));
    };
    let failed = match parse(&failed) {
        Ok(failed) => failed,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(InstanceView {
        cursor: r.get(0)?,
        id: r.get(1)?,
        saga: r.get(2)?,
        state,
        step: r.get(4)?,
        trigger: r.get(5)?,
        started_at: time(r.get(6)?),
        deadline: time(r.get(7)?),
        finished_at: r.get::<_, Option<i64>>(8)?.map(time),
        reason: r.get(9)?,
        failed,
        steps: Vec::new(),
    }))
}
