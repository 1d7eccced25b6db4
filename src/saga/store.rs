//! The SQLite store behind [`super::Sagas`]: one row per instance (its definition, state,
//! current step and what it asked to be put next) and one per step or compensation (what it
//! received and replied, times, attempts, outcome). Every transition is one transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::events::{self, Compensation, Ending};
use super::{
    delivery, millis, time, Abort, Definition, Next, Phase, Position, SagaError, State,
    StepOutcome, StepResult, Tally,
};
use crate::config::SagaConfig;
use crate::event::Event;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    saga TEXT NOT NULL,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    step TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    finished_at INTEGER,
    reason TEXT,
    failed TEXT NOT NULL DEFAULT '[]',
    seq INTEGER NOT NULL,
    pending TEXT
);
CREATE INDEX IF NOT EXISTS instances_by_state ON instances(state, deadline);
CREATE INDEX IF NOT EXISTS instances_by_end ON instances(finished_at);
CREATE TABLE IF NOT EXISTS steps (
    instance TEXT NOT NULL,
    phase TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    sink TEXT NOT NULL,
    input TEXT NOT NULL,
    reply TEXT,
    reply_id TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    outcome TEXT,
    detail TEXT,
    PRIMARY KEY (instance, phase, idx)
);
";

/// What a transition asked to be stored next, kept until it is confirmed stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    /// (sink, event in stored form) to put into the spool.
    puts: Vec<(String, String)>,
    /// The outcome event (stored form) to accept.
    finished: Option<String>,
}

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

/// An instance row, as transitions work on it.
#[derive(Debug)]
struct Instance {
    id: String,
    def: Definition,
    state: State,
    cursor: usize,
    trigger: String,
    reason: Option<String>,
    failed: Vec<String>,
    seq: i64,
    pending: Pending,
}

/// The store.
#[derive(Debug)]
pub(super) struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the store at `path`: WAL, each commit synced.
    pub(super) fn open(path: &Path) -> Result<Self, SagaError> {
        if let Some(dir) = path.parent() {
            // The spool opened first and made the directory; a failure shows in the open.
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::debug!(%error, dir = %dir.display(), "Cannot create the saga store's directory");
            }
        }
        let conn = Connection::open(path)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    /// A store in memory.
    pub(super) fn memory() -> Result<Self, SagaError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn })
    }

    pub(super) fn start(
        &mut self,
        starts: &[(Arc<SagaConfig>, Arc<Event>)],
        now: SystemTime,
    ) -> Result<(Vec<Next>, Tally), SagaError> {
        let tx = self.conn.transaction()?;
        let mut nexts = Vec::with_capacity(starts.len());
        let mut tally = Tally::default();
        for (config, trigger) in starts {
            let def = Definition::of(config);
            let Some(first) = def.steps.first().cloned() else {
                continue;
            };
            let id = uuid::Uuid::new_v4().simple().to_string();
            let deadline = now + Duration::from_millis(def.timeout_ms);
            let input = events::step(trigger, &id, &first.name);
            let stored = events::encode(&input);
            let pending = Pending {
                puts: vec![(first.to.clone(), stored.clone())],
                finished: None,
            };
            tx.execute(
                "INSERT INTO instances (id, saga, definition, state, cursor, step, trigger_id, \
                 started_at, deadline, seq, pending) VALUES (?1, ?2, ?3, 'running', 0, ?4, ?5, ?6, ?7, 1, ?8)",
                params![
                    id,
                    def.name,
                    json(&def)?,
                    first.name,
                    trigger.id,
                    millis(now),
                    millis(deadline),
                    json(&pending)?,
                ],
            )?;
            insert_step(
                &tx,
                &id,
                Phase::Forward,
                0,
                (&first.name, &first.to),
                &stored,
                now,
            )?;
            tally.started.push(def.name.clone());
            nexts.push(Next {
                instance: id,
                saga: def.name.clone(),
                seq: 1,
                deliveries: vec![delivery(&def.name, &first.to, input, now)],
                finished: None,
            });
        }
        tx.commit()?;
        Ok((nexts, tally))
    }

    pub(super) fn discard(&mut self, ids: &[String]) -> Result<(), SagaError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM steps WHERE instance = ?1", [id])?;
            tx.execute("DELETE FROM instances WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn is_current(&mut self, p: &Position) -> Result<bool, SagaError> {
        let state = match p.phase {
            Phase::Forward => State::Running,
            Phase::Compensate => State::Compensating,
        };
        let found = self
            .conn
            .query_row(
                "SELECT 1 FROM instances WHERE id = ?1 AND step = ?2 AND state = ?3",
                params![p.instance, p.step, state.name()],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Records the outcome of each step in `outcomes`, all in one synced commit: concurrent
    /// steps share it (group commit). A step whose record fails gets its error, the others
    /// are kept; when the commit itself fails, every one gets the error.
    pub(super) fn advance_all(
        &mut self,
        outcomes: &[(Position, StepResult)],
        now: SystemTime,
    ) -> Result<Vec<Result<Option<Next>, SagaError>>, SagaError> {
        let mut tx = self.conn.transaction()?;
        let mut answers = Vec::with_capacity(outcomes.len());
        let mut tally = Tally::default();
        for (p, result) in outcomes {
            let sp = tx.savepoint()?;
            let answer = advance_in(&sp, p, result, now, &mut tally);
            if answer.is_ok() {
                sp.commit()?;
            }
            answers.push(answer);
        }
        tx.commit()?;
        super::Sagas::note(&tally);
        Ok(answers)
    }

    /// [`Store::advance_all`] for one step.
    #[cfg(test)]
    pub(super) fn advance(
        &mut self,
        p: &Position,
        result: &StepResult,
        now: SystemTime,
    ) -> Result<Option<Next>, SagaError> {
        let mut answers = self.advance_all(&[(p.clone(), result.clone())], now)?;
        answers.pop().unwrap_or(Ok(None))
    }

    pub(super) fn abort(
        &mut self,
        id: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<(Abort, Tally), SagaError> {
        let tx = self.conn.transaction()?;
        let mut tally = Tally::default();
        let abort = abort_in(&tx, id, reason, now, &mut tally)?;
        tx.commit()?;
        Ok((abort, tally))
    }

    pub(super) fn expire(&mut self, now: SystemTime) -> Result<(Vec<Next>, Tally), SagaError> {
        let tx = self.conn.transaction()?;
        let mut tally = Tally::default();
        let ids: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT id FROM instances WHERE state = 'running' AND deadline <= ?1")?;
            let rows = stmt.query_map([millis(now)], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut nexts = Vec::new();
        for id in ids {
            if let Abort::Started(next) = abort_in(&tx, &id, "deadline passed", now, &mut tally)? {
                nexts.push(*next);
            }
        }
        tx.commit()?;
        Ok((nexts, tally))
    }

    pub(super) fn next_deadline(&mut self) -> Result<Option<SystemTime>, SagaError> {
        let ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(deadline) FROM instances WHERE state = 'running'",
            [],
            |r| r.get(0),
        )?;
        Ok(ms.map(time))
    }

    pub(super) fn pending(&mut self, now: SystemTime) -> Result<Vec<Next>, SagaError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, saga, seq, pending FROM instances WHERE pending IS NOT NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut nexts = Vec::new();
        for row in rows {
            let (instance, saga, seq, pending) = row?;
            let pending: Pending = parse(&pending)?;
            nexts.push(next_of(instance, saga, seq, &pending, now)?);
        }
        Ok(nexts)
    }

    /// Clears what the transitions `(instance, seq)` asked for, in one commit that is not
    /// synced: losing it to a crash only makes the next start put those deliveries again
    /// (a repeat, which at-least-once allows), and the next synced commit carries it to disk.
    pub(super) fn flushed(&mut self, done: &[(String, i64)]) -> Result<(), SagaError> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let result = self.clear(done);
        self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        result
    }

    fn clear(&mut self, done: &[(String, i64)]) -> Result<(), SagaError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE instances SET pending = NULL WHERE id = ?1 AND seq = ?2")?;
            for (id, seq) in done {
                stmt.execute(params![id, seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn sweep(
        &mut self,
        now: SystemTime,
        retention: Duration,
    ) -> Result<usize, SagaError> {
        let cutoff = millis(now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH));
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM steps WHERE instance IN \
             (SELECT id FROM instances WHERE finished_at IS NOT NULL AND finished_at < ?1)",
            [cutoff],
        )?;
        let n = tx.execute(
            "DELETE FROM instances WHERE finished_at IS NOT NULL AND finished_at < ?1",
            [cutoff],
        )?;
        tx.commit()?;
        Ok(n)
    }

    pub(super) fn active(&mut self) -> Result<Vec<(String, u64)>, SagaError> {
        let mut stmt = self.conn.prepare(
            "SELECT saga, COUNT(*) FROM instances WHERE state IN ('running', 'compensating') \
             GROUP BY saga",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (saga, n) = row?;
            out.push((saga, u64::try_from(n).unwrap_or(0)));
        }
        Ok(out)
    }

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

/// [`Store::advance_all`] for one step, inside the caller's transaction.
fn advance_in(
    tx: &Connection,
    p: &Position,
    result: &StepResult,
    now: SystemTime,
    tally: &mut Tally,
) -> Result<Option<Next>, SagaError> {
    let Some(mut inst) = load(tx, &p.instance)? else {
        return Ok(None);
    };
    let at = inst.def.steps.get(inst.cursor).map(|s| s.name.as_str());
    let expected = match inst.state {
        State::Running => Phase::Forward,
        State::Compensating => Phase::Compensate,
        _ => return Ok(None),
    };
    if at != Some(p.step.as_str()) || expected != p.phase {
        return Ok(None);
    }
    let took = finish_step(tx, &inst, p.phase, result, now)?;
    tally
        .steps
        .push((inst.def.name.clone(), p.step.clone(), took));
    match (p.phase, &result.outcome) {
        (Phase::Forward, StepOutcome::Delivered(reply)) => {
            let output = match reply {
                Some(reply) => events::encode(reply),
                None => step_text(tx, &inst.id, Phase::Forward, inst.cursor, "input")?,
            };
            inst.cursor += 1;
            match inst.def.steps.get(inst.cursor).cloned() {
                Some(next) => {
                    let input = events::step(&events::decode(&output)?, &inst.id, &next.name);
                    let stored = events::encode(&input);
                    insert_step(
                        tx,
                        &inst.id,
                        Phase::Forward,
                        inst.cursor,
                        (&next.name, &next.to),
                        &stored,
                        now,
                    )?;
                    inst.pending.puts.push((next.to, stored));
                }
                None => end(&mut inst, State::Completed, Some(&output), tally),
            }
        }
        (Phase::Forward, StepOutcome::DeadLettered(reason)) => {
            inst.reason = Some(format!("step `{}` dead-lettered ({reason})", p.step));
            let below = inst.cursor;
            compensate_below(tx, &mut inst, below, now, tally)?;
        }
        (Phase::Compensate, outcome) => {
            if matches!(outcome, StepOutcome::DeadLettered(_)) {
                inst.failed.push(p.step.clone());
            }
            let below = inst.cursor;
            compensate_below(tx, &mut inst, below, now, tally)?;
        }
    }
    let next = save(tx, &mut inst, now)?;
    Ok(Some(next))
}

/// Reads an instance row into a view (its steps left empty).
fn view_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<InstanceView, SagaError>> {
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

fn json<T: Serialize>(value: &T) -> Result<String, SagaError> {
    serde_json::to_string(value).map_err(|e| SagaError::Record(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, SagaError> {
    serde_json::from_str(text).map_err(|e| SagaError::Record(e.to_string()))
}

fn load(tx: &Connection, id: &str) -> Result<Option<Instance>, SagaError> {
    let row = tx
        .query_row(
            "SELECT definition, state, cursor, trigger_id, reason, failed, seq \
             FROM instances WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((def, state, cursor, trigger, reason, failed, seq)) = row else {
        return Ok(None);
    };
    Ok(Some(Instance {
        id: id.to_owned(),
        def: parse(&def)?,
        state: State::parse(&state).ok_or_else(|| SagaError::Record(state.clone()))?,
        cursor: usize::try_from(cursor).unwrap_or(0),
        trigger,
        reason,
        failed: parse(&failed)?,
        seq,
        // A transition replaces what an earlier one left unconfirmed: that step or
        // compensation is no longer the one waited for.
        pending: Pending::default(),
    }))
}

/// Writes the instance's new state and what it asks for; returns the [`Next`] to carry out.
fn save(tx: &Connection, inst: &mut Instance, now: SystemTime) -> Result<Next, SagaError> {
    inst.seq += 1;
    let step = inst
        .def
        .steps
        .get(inst.cursor)
        .or(inst.def.steps.last())
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let finished_at = inst.state.is_final().then(|| millis(now));
    let pending = (!inst.pending.puts.is_empty() || inst.pending.finished.is_some())
        .then(|| json(&inst.pending))
        .transpose()?;
    tx.execute(
        "UPDATE instances SET state = ?2, cursor = ?3, step = ?4, reason = ?5, failed = ?6, \
         seq = ?7, pending = ?8, finished_at = COALESCE(finished_at, ?9) WHERE id = ?1",
        params![
            inst.id,
            inst.state.name(),
            i64::try_from(inst.cursor).unwrap_or(i64::MAX),
            step,
            inst.reason,
            json(&inst.failed)?,
            inst.seq,
            pending,
            finished_at,
        ],
    )?;
    next_of(
        inst.id.clone(),
        inst.def.name.clone(),
        inst.seq,
        &inst.pending,
        now,
    )
}

fn next_of(
    instance: String,
    saga: String,
    seq: i64,
    pending: &Pending,
    now: SystemTime,
) -> Result<Next, SagaError> {
    let deliveries = pending
        .puts
        .iter()
        .map(|(sink, event)| Ok(delivery(&saga, sink, events::decode(event)?, now)))
        .collect::<Result<_, SagaError>>()?;
    let finished = pending
        .finished
        .as_deref()
        .map(events::decode)
        .transpose()?;
    Ok(Next {
        instance,
        saga,
        seq,
        deliveries,
        finished,
    })
}

fn insert_step(
    tx: &Connection,
    instance: &str,
    phase: Phase,
    idx: usize,
    (name, sink): (&str, &str),
    input: &str,
    now: SystemTime,
) -> Result<(), SagaError> {
    tx.execute(
        "INSERT OR REPLACE INTO steps (instance, phase, idx, name, sink, input, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            instance,
            phase.name(),
            i64::try_from(idx).unwrap_or(i64::MAX),
            name,
            sink,
            input,
            millis(now)
        ],
    )?;
    Ok(())
}

/// Records the end of the current step's delivery; returns how long it took, in seconds.
fn finish_step(
    tx: &Connection,
    inst: &Instance,
    phase: Phase,
    result: &StepResult,
    now: SystemTime,
) -> Result<f64, SagaError> {
    let (outcome, detail, reply, reply_id) = match &result.outcome {
        StepOutcome::Delivered(reply) => (
            "delivered",
            None,
            reply.as_deref().map(events::encode),
            reply.as_ref().map(|r| r.id.clone()),
        ),
        StepOutcome::DeadLettered(reason) => ("dead-lettered", Some(reason.clone()), None, None),
    };
    let idx = i64::try_from(inst.cursor).unwrap_or(i64::MAX);
    tx.execute(
        "UPDATE steps SET finished_at = ?4, attempts = ?5, status = ?6, outcome = ?7, \
         detail = ?8, reply = ?9, reply_id = ?10 WHERE instance = ?1 AND phase = ?2 AND idx = ?3",
        params![
            inst.id,
            phase.name(),
            idx,
            millis(now),
            result.attempts,
            result.status,
            outcome,
            detail,
            reply,
            reply_id
        ],
    )?;
    let started: Option<i64> = tx
        .query_row(
            "SELECT started_at FROM steps WHERE instance = ?1 AND phase = ?2 AND idx = ?3",
            params![inst.id, phase.name(), idx],
            |r| r.get(0),
        )
        .optional()?;
    let took = started.map_or(0, |s| millis(now).saturating_sub(s));
    Ok(took as f64 / 1000.0)
}

/// A column (`input` or `reply`) of a step row.
fn step_text(
    tx: &Connection,
    instance: &str,
    phase: Phase,
    idx: usize,
    column: &str,
) -> Result<String, SagaError> {
    let sql = format!("SELECT {column} FROM steps WHERE instance = ?1 AND phase = ?2 AND idx = ?3");
    let text: Option<Option<String>> = tx
        .query_row(
            &sql,
            params![
                instance,
                phase.name(),
                i64::try_from(idx).unwrap_or(i64::MAX)
            ],
            |r| r.get(0),
        )
        .optional()?;
    text.flatten()
        .ok_or_else(|| SagaError::Record(format!("step {idx} of {instance} has no {column}")))
}

/// Queues the compensation of the last step below `below` that has one; with none left, ends
/// the instance (compensated, or failed when a compensation was dead-lettered).
fn compensate_below(
    tx: &Connection,
    inst: &mut Instance,
    below: usize,
    now: SystemTime,
    tally: &mut Tally,
) -> Result<(), SagaError> {
    for j in (0..below).rev() {
        let Some(step) = inst.def.steps.get(j).cloned() else {
            continue;
        };
        let Some(sink) = step.compensate else {
            continue;
        };
        let input = step_text(tx, &inst.id, Phase::Forward, j, "input")?;
        let reply = step_text(tx, &inst.id, Phase::Forward, j, "reply").ok();
        let subject = events::decode(&input)?.subject;
        let reason = inst.reason.clone().unwrap_or_default();
        let event = events::compensation(
            &Compensation {
                saga: &inst.def.name,
                instance: &inst.id,
                step: &step.name,
                reason: &reason,
                input: &input,
                reply: reply.as_deref(),
            },
            subject,
        );
        let stored = events::encode(&event);
        insert_step(
            tx,
            &inst.id,
            Phase::Compensate,
            j,
            (&step.name, &sink),
            &stored,
            now,
        )?;
        inst.state = State::Compensating;
        inst.cursor = j;
        inst.pending.puts.push((sink, stored));
        return Ok(());
    }
    let state = match inst.failed.is_empty() {
        true => State::Compensated,
        false => State::Failed,
    };
    end(inst, state, None, tally);
    Ok(())
}

/// Ends the instance in `state`, with its outcome event pending.
fn end(inst: &mut Instance, state: State, output: Option<&str>, tally: &mut Tally) {
    inst.state = state;
    let event = events::ending(&Ending {
        saga: &inst.def.name,
        instance: &inst.id,
        state,
        reason: inst.reason.as_deref(),
        failed: &inst.failed,
        output,
        trigger: &inst.trigger,
    });
    inst.pending.finished = Some(events::encode(&event));
    tally.ended.push((inst.def.name.clone(), state));
}

/// Starts compensating a running instance: its step in flight is cancelled (its delivery
/// is dropped when it comes up), the steps before it are compensated.
fn abort_in(
    tx: &Connection,
    id: &str,
    reason: &str,
    now: SystemTime,
    tally: &mut Tally,
) -> Result<Abort, SagaError> {
    let Some(mut inst) = load(tx, id)? else {
        return Ok(Abort::NotFound);
    };
    if inst.state != State::Running {
        return Ok(Abort::Already(inst.state));
    }
    tx.execute(
        "UPDATE steps SET finished_at = ?4, outcome = 'cancelled', detail = ?5 \
         WHERE instance = ?1 AND phase = ?2 AND idx = ?3 AND finished_at IS NULL",
        params![
            inst.id,
            Phase::Forward.name(),
            i64::try_from(inst.cursor).unwrap_or(i64::MAX),
            millis(now),
            reason
        ],
    )?;
    inst.reason = Some(reason.to_owned());
    let below = inst.cursor;
    compensate_below(tx, &mut inst, below, now, tally)?;
    Ok(Abort::Started(Box::new(save(tx, &mut inst, now)?)))
}
