//! A channel's commands by id ([`CommandTable`], reused in place) and the
//! FIFO queues of commands waiting for a resource ([`WaitQueues`]).

use std::collections::VecDeque;

use super::action::{CmdId, Generation};
use super::command::Command;
use crate::wire::Tag;

/// The commands of a channel, by [`CmdId`]: entries are allocated as the
/// table grows and reused in place; a freed id is the next one handed out
/// (last in, first out).
#[derive(Debug)]
pub(super) struct CommandTable {
    entries: Vec<(bool, Command)>,
    /// Freed ids, the last freed on top.
    free: Vec<CmdId>,
    len: usize,
}

impl CommandTable {
    pub(super) fn with_capacity(n: usize) -> CommandTable {
        CommandTable {
            entries: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            len: 0,
        }
    }

    /// Commands in the table.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a new command (see [`Command::new`]); returns its id. The
    /// caller keeps the table within [`WrId::INDEXES`] commands.
    pub(super) fn insert(&mut self, gen: Generation, recv_slot: u32, tag: Tag, holds_credit: bool) -> CmdId {
        self.len += 1;
        if let Some(id) = self.free.pop() {
            let (live, c) = &mut self.entries[id.index()];
            *live = true;
            c.reset(gen, recv_slot, tag, holds_credit);
            return id;
        }
        self.entries
            .push((true, Command::new(gen, recv_slot, tag, holds_credit)));
        // In range: the caller keeps the table within WrId::INDEXES.
        CmdId((self.entries.len() - 1) as u16)
    }

    /// Frees the entry of `id` (its contents stay until it is reused).
    pub(super) fn vacate(&mut self, id: CmdId) {
        if let Some((live, _)) = self.entries.get_mut(id.index()).filter(|(live, _)| *live) {
            *live = false;
            self.len -= 1;
            self.free.push(id);
        }
    }

    #[cfg(test)]
    pub(super) fn contains(&self, id: CmdId) -> bool {
        self.get(id).is_some()
    }

    pub(super) fn get(&self, id: CmdId) -> Option<&Command> {
        self.entries
            .get(id.index())
            .filter(|(live, _)| *live)
            .map(|(_, c)| c)
    }

    pub(super) fn get_mut(&mut self, id: CmdId) -> Option<&mut Command> {
        self.entries
            .get_mut(id.index())
            .filter(|(live, _)| *live)
            .map(|(_, c)| c)
    }

    /// Live commands with their ids, in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (CmdId, &Command)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (live, _))| *live)
            .map(|(i, (_, c))| (CmdId(i as u16), c))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (CmdId, &mut Command)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter(|(_, (live, _))| *live)
            .map(|(i, (_, c))| (CmdId(i as u16), c))
    }
}

#[cfg(test)]
impl std::ops::Index<usize> for CommandTable {
    type Output = Command;

    fn index(&self, id: usize) -> &Command {
        self.get(CmdId(id as u16)).expect("command id not in the table")
    }
}

#[cfg(test)]
impl std::ops::IndexMut<usize> for CommandTable {
    fn index_mut(&mut self, id: usize) -> &mut Command {
        self.get_mut(CmdId(id as u16))
            .expect("command id not in the table")
    }
}

/// What the release of a removed command needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Removed {
    pub(super) recv_slot: u32,
    pub(super) holds_credit: bool,
    /// Whether its response was posted (its receive slot went back then).
    pub(super) responding: bool,
}

/// A resource a command can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resource {
    /// Send-queue entries (WRITEs, READs, responses).
    SendSlot = 0,
    /// RDMA READs outstanding, bounded by the negotiated initiator depth.
    ReadCredit = 1,
    /// Data pool space.
    DataBuffer = 2,
    /// Descriptor table pool space.
    TableBuffer = 3,
}

impl Resource {
    pub(super) const ALL: [Resource; 4] = [
        Resource::SendSlot,
        Resource::ReadCredit,
        Resource::DataBuffer,
        Resource::TableBuffer,
    ];
}

/// One FIFO of waiting commands per [`Resource`], allocated once. Each
/// entry carries the order in which it was parked, so that waiters for
/// different resources resume in the order they started waiting.
#[derive(Debug)]
pub(super) struct WaitQueues {
    queues: [VecDeque<(u64, CmdId)>; 4],
    /// Commands on all queues.
    waiting: usize,
    next_seq: u64,
}

impl WaitQueues {
    pub(super) fn with_capacity(n: usize) -> WaitQueues {
        WaitQueues {
            queues: std::array::from_fn(|_| VecDeque::with_capacity(n)),
            waiting: 0,
            next_seq: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    pub(super) fn len(&self, r: Resource) -> usize {
        self.queues[r as usize].len()
    }

    /// The ids waiting for `r`, first first.
    #[cfg(test)]
    pub(super) fn ids(&self, r: Resource) -> Vec<CmdId> {
        self.queues[r as usize].iter().map(|&(_, id)| id).collect()
    }

    pub(super) fn has_waiters(&self, r: Resource) -> bool {
        !self.queues[r as usize].is_empty()
    }

    /// When the first waiter for `r` was parked.
    pub(super) fn head_seq(&self, r: Resource) -> Option<u64> {
        self.queues[r as usize].front().map(|&(seq, _)| seq)
    }

    pub(super) fn push_back(&mut self, r: Resource, id: CmdId) {
        self.waiting += 1;
        self.queues[r as usize].push_back((self.next_seq, id));
        self.next_seq += 1;
    }

    pub(super) fn pop_front(&mut self, r: Resource) -> Option<(u64, CmdId)> {
        let e = self.queues[r as usize].pop_front()?;
        self.waiting -= 1;
        Some(e)
    }

    /// Moves the last waiter for `r` (just parked again) back to the head,
    /// with the place `seq` it had there.
    pub(super) fn back_to_head(&mut self, r: Resource, seq: u64) {
        let q = &mut self.queues[r as usize];
        if let Some((_, id)) = q.pop_back() {
            q.push_front((seq, id));
        }
    }

    pub(super) fn remove(&mut self, r: Resource, id: CmdId) {
        let q = &mut self.queues[r as usize];
        let before = q.len();
        q.retain(|&(_, w)| w != id);
        self.waiting -= before - q.len();
    }

    pub(super) fn clear(&mut self) {
        self.queues.iter_mut().for_each(VecDeque::clear);
        self.waiting = 0;
    }
}
