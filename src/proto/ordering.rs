//! Task attributes (SAM-5 8.6), per LUN on one channel
//! (`docs/task-management.md`): a SIMPLE task is enabled at once unless an
//! ORDERED task received before it is still in the task set; an ORDERED
//! task waits until every task received before it has ended; a HEAD OF
//! QUEUE task is enabled at once. A dormant task moves no data. SIMPLE
//! tasks may complete in any order (QUEUE ALGORITHM MODIFIER 1).
//!
//! Cost: one comparison per SIMPLE task while no ORDERED one is on the
//! channel; a scan of the channel's commands otherwise.

use super::action::CmdId;
use super::channel::Channel;
use super::command::CommandState;
use super::request::ExternalTable;
use crate::wire::Cmd;

/// Whether srptd takes tasks with this attribute. ACA needs NACA, which
/// srptd does not support (SAM-5 5.9.3: ILLEGAL REQUEST); other values are
/// reserved.
pub(super) fn supported(attr: u8) -> bool {
    matches!(
        attr,
        Cmd::TASK_ATTR_SIMPLE | Cmd::TASK_ATTR_HEAD_OF_QUEUE | Cmd::TASK_ATTR_ORDERED
    )
}

impl Channel {
    /// Command `id`, planned, enters the task set with `attr`: it goes on to
    /// fetch its table (`external`) or its buffer, or is dormant.
    pub(super) fn enter_task_set(&mut self, id: CmdId, attr: u8, external: Option<ExternalTable>) {
        self.arrivals += 1;
        let seq = self.arrivals;
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        c.attr = attr;
        c.seq = seq;
        if attr == Cmd::TASK_ATTR_ORDERED {
            self.ordered += 1;
        }
        if self.may_enable(id) {
            self.enable(id, external);
        } else if let Some(c) = self.cmds.get_mut(id) {
            c.state = CommandState::Dormant(external);
            self.dormant += 1;
        }
    }

    /// Command `id` leaves the channel (called once, on removal).
    pub(super) fn left_task_set(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get(id) else {
            return;
        };
        if c.attr == Cmd::TASK_ATTR_ORDERED {
            self.ordered = self.ordered.saturating_sub(1);
        }
        if let CommandState::Dormant(_) = c.state {
            self.dormant = self.dormant.saturating_sub(1);
        }
    }

    fn enable(&mut self, id: CmdId, external: Option<ExternalTable>) {
        if let Some(c) = self.cmds.get_mut(id) {
            c.state = match external {
                Some(table) => CommandState::NeedTable(table),
                None => CommandState::NeedBuffer,
            };
        }
    }

    /// SAM-5 8.6.1-8.6.4, for the tasks of this channel.
    fn may_enable(&self, id: CmdId) -> bool {
        let Some(c) = self.cmds.get(id) else {
            return false;
        };
        let earlier = |o: &super::command::Command| o.seq != 0 && o.seq < c.seq && o.lun == c.lun;
        match c.attr {
            Cmd::TASK_ATTR_HEAD_OF_QUEUE => true,
            Cmd::TASK_ATTR_ORDERED => !self.cmds.iter().any(|(i, o)| i != id && earlier(o)),
            _ if self.ordered == 0 => true,
            _ => !self
                .cmds
                .iter()
                .any(|(i, o)| i != id && o.attr == Cmd::TASK_ATTR_ORDERED && earlier(o)),
        }
    }

    /// Enables the dormant tasks whose turn has come, oldest first.
    pub(super) fn wake_dormant(&mut self) {
        if self.dormant == 0 {
            return;
        }
        let mut ids: Vec<(u64, CmdId)> = self
            .cmds
            .iter()
            .filter(|(_, c)| matches!(c.state, CommandState::Dormant(_)))
            .map(|(i, c)| (c.seq, i))
            .collect();
        ids.sort_unstable();
        for (_, id) in ids {
            let Some(&CommandState::Dormant(external)) = self.cmds.get(id).map(|c| &c.state) else {
                continue;
            };
            if self.may_enable(id) {
                self.dormant = self.dormant.saturating_sub(1);
                self.enable(id, external);
                self.step(id);
            }
        }
    }
}
