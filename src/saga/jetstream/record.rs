//! An instance as one JetStream KV value — its state, what it asked to be stored next and
//! every step and compensation — and its transitions on that value. They make the same
//! choices as [`super::super::transition`] makes on SQLite rows.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::super::events::{self, Compensation};
use super::super::transition::{end, next_of, parse, Instance, Pending};
use super::super::{
    delivery, millis, time, Abort, Definition, Next, Phase, Position, SagaError, State,
    StepOutcome, StepResult, Tally,
};
use super::super::{InstanceView, StepView};
use crate::config::SagaConfig;
use crate::event::Event;

/// One instance with its steps.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    /// State, definition, cursor and what is pending.
    #[serde(flatten)]
    pub(super) inst: Instance,
    /// Its place in listings: microseconds since the epoch at its start, unique per daemon.
    pub(super) order: i64,
    /// Start, in milliseconds since the epoch.
    pub(super) started: i64,
    /// Deadline, in milliseconds since the epoch.
    pub(super) deadline: i64,
    /// End, in milliseconds since the epoch.
    pub(super) finished: Option<i64>,
    /// When what is pending was recorded or last claimed (ms); `None` when nothing is.
    pub(super) pending_at: Option<i64>,
    /// Steps and compensations in the order they started.
    pub(super) steps: Vec<StepRecord>,
}

/// One step or compensation of a [`Record`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StepRecord {
    /// True for a compensation.
    pub(super) compensation: bool,
    /// The step's index in the definition.
    pub(super) idx: usize,
    pub(super) name: String,
    pub(super) sink: String,
    /// What it received (stored form).
    pub(super) input: String,
    /// What its sink answered (stored form).
    pub(super) reply: Option<String>,
    pub(super) reply_id: Option<String>,
    pub(super) started: i64,
    pub(super) finished: Option<i64>,
    pub(super) attempts: u32,
    pub(super) status: Option<u16>,
    pub(super) outcome: Option<String>,
    pub(super) detail: Option<String>,
}

impl Record {
    /// A new instance of `config` started by `trigger`, with its first step pending.
    pub(super) fn start(
        config: &SagaConfig,
        trigger: &Event,
        now: SystemTime,
        order: i64,
    ) -> Option<(Self, Next)> {
        let def = Definition::of(config);
        let first = def.steps.first().cloned()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let input = events::step(trigger, &id, &first.name);
        let stored = events::encode(&input);
        let deadline = now + Duration::from_millis(def.timeout_ms);
        let mut record = Self {
            inst: Instance {
                id: id.clone(),
                state: State::Running,
                cursor: 0,
                trigger: trigger.id.clone(),
                reason: None,
                failed: Vec::new(),
                seq: 1,
                pending: Pending {
                    puts: vec![(first.to.clone(), stored.clone())],
                    finished: None,
                },
                def,
            },
            order,
            started: millis(now),
            deadline: millis(deadline),
            finished: None,
            pending_at: Some(millis(now)),
            steps: Vec::new(),
        };
        record.insert_step(false, 0, (&first.name, &first.to), stored, now);
        let next = Next {
            instance: id,
            saga: record.inst.def.name.clone(),
            seq: 1,
            deliveries: vec![delivery(&record.inst.def.name, &first.to, input, now)],
            finished: None,
        };
        Some((record, next))
    }

    /// Reads a stored value.
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, SagaError> {
        parse(std::str::from_utf8(bytes).map_err(|e| SagaError::Record(e.to_string()))?)
    }

    /// Whether `p` is the step or compensation the instance waits for.
    pub(super) fn is_current(&self, p: &Position) -> bool {
        let waits = match self.inst.state {
            State::Running => Phase::Forward,
            State::Compensating => Phase::Compensate,
            _ => return false,
        };
        let at = self.inst.def.steps.get(self.inst.cursor).map(|s| &s.name);
        waits == p.phase && at == Some(&p.step)
    }

    /// Whether a transition asked for something not yet confirmed stored.
    pub(super) fn has_pending(&self) -> bool {
        !self.inst.pending.puts.is_empty() || self.inst.pending.finished.is_some()
    }

    /// What is pending, as a [`Next`] to carry out again.
    pub(super) fn pending_next(&self, now: SystemTime) -> Result<Next, SagaError> {
        let inst = &self.inst;
        next_of(
            inst.id.clone(),
            inst.def.name.clone(),
            inst.seq,
            &inst.pending,
            now,
        )
    }

    /// Records the outcome of the delivery at `p`; `None` when it is not the current one.
    pub(super) fn advance(
        &mut self,
        p: &Position,
        result: &StepResult,
        now: SystemTime,
        tally: &mut Tally,
    ) -> Result<Option<Next>, SagaError> {
        if !self.is_current(p) {
            return Ok(None);
        }
        // A transition replaces what an earlier one left unconfirmed (as on SQLite).
        self.inst.pending = Pending::default();
        let took = self.finish_step(p.phase, result, now);
        let saga = self.inst.def.name.clone();
        tally.steps.push((saga, p.step.clone(), took));
        let cursor = self.inst.cursor;
        match (p.phase, &result.outcome) {
            (Phase::Forward, StepOutcome::Delivered(reply)) => {
                let output = match reply {
                    Some(reply) => events::encode(reply),
                    None => self.text(false, cursor, false)?,
                };
                self.inst.cursor += 1;
                match self.inst.def.steps.get(self.inst.cursor).cloned() {
                    Some(next) => {
                        let id = self.inst.id.clone();
                        let input = events::step(&events::decode(&output)?, &id, &next.name);
                        let stored = events::encode(&input);
                        let at = self.inst.cursor;
                        self.insert_step(false, at, (&next.name, &next.to), stored.clone(), now);
                        self.inst.pending.puts.push((next.to, stored));
                    }
                    None => end(&mut self.inst, State::Completed, Some(&output), tally),
                }
            }
            (Phase::Forward, StepOutcome::DeadLettered(reason)) => {
                self.inst.reason = Some(format!("step `{}` dead-lettered ({reason})", p.step));
                self.compensate_below(cursor, now, tally)?;
            }
            (Phase::Compensate, outcome) => {
                if matches!(outcome, StepOutcome::DeadLettered(_)) {
                    self.inst.failed.push(p.step.clone());
                }
                self.compensate_below(cursor, now, tally)?;
            }
        }
        self.save(now).map(Some)
    }

    /// Starts compensating a running instance: its step in flight is cancelled.
    pub(super) fn abort(
        &mut self,
        reason: &str,
        now: SystemTime,
        tally: &mut Tally,
    ) -> Result<Abort, SagaError> {
        if self.inst.state != State::Running {
            return Ok(Abort::Already(self.inst.state));
        }
        self.inst.pending = Pending::default();
        let cursor = self.inst.cursor;
        if let Some(step) = self.step_mut(false, cursor) {
            if step.finished.is_none() {
                step.finished = Some(millis(now));
                step.outcome = Some("cancelled".to_owned());
                step.detail = Some(reason.to_owned());
            }
        }
        self.inst.reason = Some(reason.to_owned());
        self.compensate_below(cursor, now, tally)?;
        Ok(Abort::Started(Box::new(self.save(now)?)))
    }

    /// Clears what transition `seq` asked for; false when there is nothing to clear.
    pub(super) fn flushed(&mut self, seq: i64) -> bool {
        if self.inst.seq != seq || !self.has_pending() {
            return false;
        }
        self.inst.pending = Pending::default();
        self.pending_at = None;
        true
    }

    /// The instance as the admin API shows it; with `steps`, its steps too.
    pub(super) fn view(&self, steps: bool) -> InstanceView {
        let inst = &self.inst;
        InstanceView {
            cursor: self.order,
            id: inst.id.clone(),
            saga: inst.def.name.clone(),
            state: inst.state,
            step: self.step_name(),
            trigger: inst.trigger.clone(),
            started_at: time(self.started),
            deadline: time(self.deadline),
            finished_at: self.finished.map(time),
            reason: inst.reason.clone(),
            failed: inst.failed.clone(),
            steps: match steps {
                true => self.steps.iter().map(StepRecord::view).collect(),
                false => Vec::new(),
            },
        }
    }

    /// The step it waits for; the last one once ended.
    fn step_name(&self) -> String {
        let steps = &self.inst.def.steps;
        let step = steps.get(self.inst.cursor).or(steps.last());
        step.map(|s| s.name.clone()).unwrap_or_default()
    }

    /// Writes the new state; returns the [`Next`] to carry out.
    fn save(&mut self, now: SystemTime) -> Result<Next, SagaError> {
        self.inst.seq += 1;
        if self.inst.state.is_final() {
            self.finished = self.finished.or(Some(millis(now)));
        }
        self.pending_at = self.has_pending().then(|| millis(now));
        self.pending_next(now)
    }

    fn step_mut(&mut self, compensation: bool, idx: usize) -> Option<&mut StepRecord> {
        self.steps
            .iter_mut()
            .find(|s| s.compensation == compensation && s.idx == idx)
    }

    /// Adds a step or compensation; one at the same place is replaced (and moves last).
    fn insert_step(
        &mut self,
        compensation: bool,
        idx: usize,
        (name, sink): (&str, &str),
        input: String,
        now: SystemTime,
    ) {
        self.steps
            .retain(|s| !(s.compensation == compensation && s.idx == idx));
        self.steps.push(StepRecord {
            compensation,
            idx,
            name: name.to_owned(),
            sink: sink.to_owned(),
            input,
            reply: None,
            reply_id: None,
            started: millis(now),
            finished: None,
            attempts: 0,
            status: None,
            outcome: None,
            detail: None,
        });
    }

    /// Records the end of the current step's delivery; returns how long it took, in seconds.
    fn finish_step(&mut self, phase: Phase, result: &StepResult, now: SystemTime) -> f64 {
        let cursor = self.inst.cursor;
        let Some(step) = self.step_mut(phase == Phase::Compensate, cursor) else {
            return 0.0;
        };
        step.finished = Some(millis(now));
        step.attempts = result.attempts;
        step.status = result.status;
        match &result.outcome {
            StepOutcome::Delivered(reply) => {
                step.outcome = Some("delivered".to_owned());
                step.reply = reply.as_deref().map(events::encode);
                step.reply_id = reply.as_ref().map(|r| r.id.clone());
            }
            StepOutcome::DeadLettered(reason) => {
                step.outcome = Some("dead-lettered".to_owned());
                step.detail = Some(reason.clone());
            }
        }
        millis(now).saturating_sub(step.started) as f64 / 1000.0
    }

    /// A step's input (or, with `reply`, its reply).
    fn text(&self, compensation: bool, idx: usize, reply: bool) -> Result<String, SagaError> {
        let step = self
            .steps
            .iter()
            .find(|s| s.compensation == compensation && s.idx == idx);
        let text = step.and_then(|s| match reply {
            true => s.reply.clone(),
            false => Some(s.input.clone()),
        });
        text.ok_or_else(|| SagaError::Record(format!("step {idx} of {} is missing", self.inst.id)))
    }

    /// Queues the compensation of the last step below `below` that has one; with none left,
    /// ends the instance.
    fn compensate_below(
        &mut self,
        below: usize,
        now: SystemTime,
        tally: &mut Tally,
    ) -> Result<(), SagaError> {
        for j in (0..below).rev() {
            let Some(step) = self.inst.def.steps.get(j).cloned() else {
                continue;
            };
            let Some(sink) = step.compensate else {
                continue;
            };
            let input = self.text(false, j, false)?;
            let reply = self.text(false, j, true).ok();
            let subject = events::decode(&input)?.subject;
            let reason = self.inst.reason.clone().unwrap_or_default();
            let event = events::compensation(
                &Compensation {
                    saga: &self.inst.def.name,
                    instance: &self.inst.id,
                    step: &step.name,
                    reason: &reason,
                    input: &input,
                    reply: reply.as_deref(),
                },
                subject,
            );
            let stored = events::encode(&event);
            self.insert_step(true, j, (&step.name, &sink), stored.clone(), now);
            self.inst.state = State::Compensating;
            self.inst.cursor = j;
            self.inst.pending.puts.push((sink, stored));
            return Ok(());
        }
        let state = match self.inst.failed.is_empty() {
            true => State::Compensated,
            false => State::Failed,
        };
        end(&mut self.inst, state, None, tally);
        Ok(())
    }
}

impl StepRecord {
    fn view(&self) -> StepView {
        StepView {
            name: self.name.clone(),
            phase: match self.compensation {
                true => Phase::Compensate,
                false => Phase::Forward,
            },
            sink: self.sink.clone(),
            started_at: time(self.started),
            finished_at: self.finished.map(time),
            attempts: self.attempts,
            status: self.status,
            outcome: self.outcome.clone(),
            detail: self.detail.clone(),
            reply_id: self.reply_id.clone(),
        }
    }
}
