//! The SQLite store behind [`super::Sagas`]: one row per instance (its definition, state,
//! current step and what it asked to be put next) and one per step or compensation (what it
//! received and replied, times, attempts, outcome). Every transition is one transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};

use super::events;
use super::transition::{abort_in, advance_in, insert_step, json, next_of, parse, Pending};
use super::{
    delivery, millis, time, Abort, Definition, Next, Phase, Position, SagaError, State, StepResult,
    Tally,
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

/// The store.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) conn: Connection,
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
}
