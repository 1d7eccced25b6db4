//! Transitions of one instance inside a transaction: loading it, recording a step's end,
//! choosing what comes next (the next step, a compensation, the end) and saving it with the
//! deliveries it asks for.

use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::events::{self, Compensation, Ending};
use super::{
    delivery, millis, Abort, Definition, Next, Phase, Position, SagaError, State, StepOutcome,
    StepResult, Tally,
};

/// What a transition asked to be stored next, kept until it is confirmed stored.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Pending {
    /// (sink, event in stored form) to put into the spool.
    pub(super) puts: Vec<(String, String)>,
    /// The outcome event (stored form) to accept.
    pub(super) finished: Option<String>,
}

/// An instance row, as transitions work on it (and, with its steps, the JetStream record).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Instance {
    pub(super) id: String,
    pub(super) def: Definition,
    pub(super) state: State,
    pub(super) cursor: usize,
    pub(super) trigger: String,
    pub(super) reason: Option<String>,
    pub(super) failed: Vec<String>,
    pub(super) seq: i64,
    pub(super) pending: Pending,
}

/// [`Store::advance_all`] for one step, inside the caller's transaction.
pub(super) fn advance_in(
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

pub(super) fn json<T: Serialize>(value: &T) -> Result<String, SagaError> {
    serde_json::to_string(value).map_err(|e| SagaError::Record(e.to_string()))
}

pub(super) fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, SagaError> {
    serde_json::from_str(text).map_err(|e| SagaError::Record(e.to_string()))
}

pub(super) fn load(tx: &Connection, id: &str) -> Result<Option<Instance>, SagaError> {
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
pub(super) fn save(
    tx: &Connection,
    inst: &mut Instance,
    now: SystemTime,
) -> Result<Next, SagaError> {
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

pub(super) fn next_of(
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

pub(super) fn insert_step(
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
pub(super) fn finish_step(
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
pub(super) fn step_text(
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
pub(super) fn compensate_below(
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
pub(super) fn end(inst: &mut Instance, state: State, output: Option<&str>, tally: &mut Tally) {
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
pub(super) fn abort_in(
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
