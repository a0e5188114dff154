//! Task management across channels (`docs/task-management.md`): a
//! channel ends its tasks that another channel's abort covers, and a
//! function (or PERSISTENT RESERVE OUT with PREEMPT AND ABORT) whose abort
//! reaches other channels answers only once they have ended there.
//!
//! The shared part is `scsi::task_set` (sans I/O, no lock on the data
//! path). Waiting is polled: the driver calls `handle_timeout` at least
//! every [`TASK_SET_POLL`] while [`Channel::waits_for_task_sets`] holds; the
//! channels being waited for acknowledge as their own events come (a
//! channel holding a command always has one coming).

use std::time::Duration;

use super::action::CmdId;
use super::channel::Channel;
use super::command::{has_work_in_flight, CommandState};
use crate::scsi::cdb::Cmd;
use crate::scsi::reservations::commands_cleared_by_another_initiator;
use crate::scsi::reservations::PrOutAction;
use crate::scsi::task_set::AbortScope;
use crate::scsi::ScsiStatus;
use crate::wire::TmFunction;

/// How often a channel waiting for other channels' tasks looks again.
pub const TASK_SET_POLL: Duration = Duration::from_millis(1);

impl Channel {
    /// Whether a request waits for other channels to end aborted tasks;
    /// the driver then calls `handle_timeout` every [`TASK_SET_POLL`].
    pub fn waits_for_task_sets(&self) -> bool {
        self.task_set_waiters > 0
    }

    /// Publishes the part of task management function `tmf` (for SAM
    /// `lun`) that reaches other channels, and notes what it waits for.
    /// The control mode page reports TST = 000b (one task set per LUN for
    /// every I_T nexus): LOGICAL UNIT RESET (SAM-5 7.7) and CLEAR TASK SET
    /// (SAM-5 7.4) abort every nexus's tasks, ABORT TASK SET (SAM-5 7.3)
    /// only this nexus's.
    pub(super) fn publish_task_set_abort(&mut self, tmf: CmdId, lun: [u8; 8], func: TmFunction) {
        // Other nexuses may know the logical unit by another number (an
        // ACL's mapping): scopes name it by its number in the target's table.
        let Some(id) = self.nexus.unit(lun) else {
            return;
        };
        let me = self.nexus.id();
        let target = self.nexus.target();
        let scope = if func == TmFunction::ABORT_TASK_SET {
            AbortScope::Nexus { lun: id, nexus: me }
        } else {
            if func == TmFunction::CLEAR_TASK_SET {
                // SAM-5 7.4 with TAS = 0: the other I_T nexuses learn their
                // tasks were cleared.
                target.unit_attention_others(id, &me, commands_cleared_by_another_initiator());
            }
            AbortScope::Lun(id)
        };
        let gen = target.task_sets().publish(scope, Some(me));
        if let Some(c) = self.cmds.get_mut(tmf) {
            c.task_set_gen = Some(gen);
        }
    }

    /// Task management request `id` no longer waits for this channel's
    /// aborted commands: it waits for the other channels', or answers.
    pub(super) fn local_aborts_ended(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        match c.task_set_gen.take() {
            Some(gen) if !self.nexus.target().task_sets().drained(gen, &self.task_set) => {
                c.state = CommandState::TaskSetWait { gen };
                self.task_set_waiters += 1;
            }
            _ => {
                c.state = CommandState::RESPOND;
                self.step(id);
            }
        }
    }

    /// A PERSISTENT RESERVE OUT with PREEMPT AND ABORT that succeeded
    /// answers only after the preempted nexuses' tasks have ended on every
    /// channel (SPC-4 5.13.11.2.4: aborted as by ABORT TASK SET, SAM-5 7.3,
    /// which completes when they have).
    pub(super) fn wait_after_preempt_and_abort(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let preempts = matches!(
            c.scsi.as_ref().map(|s| s.cmd()),
            Some(Cmd::PersistentReserveOut(pr)) if pr.action == PrOutAction::PreemptAndAbort
        );
        if !preempts || c.response.status != ScsiStatus::GOOD {
            return;
        }
        // Its own abort was published before it completed; a later one
        // only makes the wait longer, never shorter.
        let sets = self.nexus.target().task_sets();
        let gen = sets.current();
        if !sets.drained(gen, &self.task_set) {
            c.state = CommandState::TaskSetWait { gen };
            self.task_set_waiters += 1;
        }
    }

    /// Answers the requests whose wait for other channels is over.
    pub(super) fn check_task_set_waits(&mut self) {
        if self.task_set_waiters == 0 {
            return;
        }
        let sets = self.nexus.target().task_sets();
        let done: Vec<CmdId> = self
            .cmds
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, CommandState::TaskSetWait { gen } if sets.drained(gen, &self.task_set))
            })
            .map(|(i, _)| i)
            .collect();
        for id in done {
            if let Some(c) = self.cmds.get_mut(id) {
                c.state = CommandState::RESPOND;
                self.task_set_waiters = self.task_set_waiters.saturating_sub(1);
                self.step(id);
            }
        }
    }

    /// Looks for aborts published since the last look (one atomic load when
    /// there are none): ends this channel's commands they cover, and
    /// acknowledges them once those have ended.
    pub(super) fn sync_task_sets(&mut self) {
        let target = std::sync::Arc::clone(self.nexus.target());
        let sets = target.task_sets();
        if self.task_set.behind(sets) {
            let news = self.task_set.news(sets);
            let me = self.nexus.id();
            // Planned commands only: one that was not planned moved no data
            // and only answers its CHECK CONDITION. A command of the nexus
            // whose function aborted it is answered TASK ABORTED.
            let covered: Vec<(CmdId, bool)> = self
                .cmds
                .iter()
                .filter(|(_, c)| !c.is_task_mgmt && c.scsi.is_some() && !c.remote_abort)
                .filter_map(|(i, c)| {
                    let l = c.scsi.as_ref()?.unit()?;
                    news.iter()
                        .filter_map(|p| p.answers(l, &me))
                        .reduce(|a, b| a || b)
                        .map(|answer| (i, answer))
                })
                .collect();
            for (id, answer) in covered {
                self.abort_for_other_channel(id, answer);
            }
        }
        if self.remote_pending == 0 {
            self.task_set.ack();
        }
    }

    /// Aborts command `id` for another channel's function, which waits
    /// until it has ended: answered TASK ABORTED when `answer` (the
    /// function is its own nexus's), else without a response (TAS = 0,
    /// SAM-5 5.6).
    fn abort_for_other_channel(&mut self, id: CmdId, answer: bool) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        // Not a task an ABORT TASK of this channel ended (see on_tsk_mgmt).
        if !c.aborted || c.remote_abort {
            c.answer_abort |= answer;
        }
        c.remote_abort = true;
        self.remote_pending += 1;
        if matches!(c.state, CommandState::Responding { .. }) || c.aborted {
            // Its response is posted, or it ends after its work in flight:
            // either way it leaves soon, and the wait lasts until then.
            return;
        }
        c.aborted = true;
        let in_flight = has_work_in_flight(&c.state);
        self.count(id, |s| s.aborted += 1);
        if !in_flight {
            self.finish_silently(id);
        }
    }

    /// Answers aborted command `id` TASK ABORTED if it is to be answered
    /// (`answer_abort`) and the channel still serves commands. The function
    /// waiting for it (`abort_waiter`) is told when the response's send
    /// has completed (`Channel::free_command`).
    ///
    /// Why answer when SAM-5 5.6 says the issuing nexus gets no response:
    /// the Linux initiator (ib_srp since 4.x) no longer completes a LUN's
    /// outstanding requests after its LOGICAL UNIT RESET succeeds, and a
    /// reset sent outside error recovery (SG_SCSI_RESET, `sg_reset -d`)
    /// leaves them to the SCSI timeout (30 s) and ABORT TASK. TASK ABORTED
    /// makes the midlayer retry them at once.
    pub(super) fn answer_aborted(&mut self, id: CmdId) -> bool {
        let serving = self.serves_commands();
        let Some(c) = self.cmds.get_mut(id) else {
            return false;
        };
        if !c.answer_abort || !serving {
            return false;
        }
        match c.state {
            CommandState::Dormant(_) => self.dormant = self.dormant.saturating_sub(1),
            CommandState::TaskSetWait { .. } => {
                self.task_set_waiters = self.task_set_waiters.saturating_sub(1)
            }
            _ => {}
        }
        let Some(c) = self.cmds.get_mut(id) else {
            return false;
        };
        if let Some(r) = c.queued_for.take() {
            self.waiters.remove(r, id);
        }
        let Some(c) = self.cmds.get_mut(id) else {
            return false;
        };
        c.response.status = ScsiStatus::TASK_ABORTED;
        c.response.sense = None;
        c.response.rsp_code = None;
        if !matches!(c.state, CommandState::Respond { .. }) {
            // Data-in WRITEs already chained to a response stay so.
            c.state = CommandState::RESPOND;
            c.response.flags = 0;
            c.response.data_in_residual = 0;
            c.response.data_out_residual = 0;
        }
        self.step(id);
        true
    }
}
