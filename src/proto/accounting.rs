//! What a channel counts: [`ChannelStats`] for the channel and
//! [`IoStats`] per LUN it addresses ([`LunStats`]), updated where the
//! command state machine passes (request received, planned, answered,
//! response sent, freed). Plain adds on the channel's own memory, which one
//! poller thread owns: no atomics, no locks, no allocation per command.
//!
//! Latency runs from the SRP_CMD's receive completion to the send
//! completion of its SRP_RSP, on the clock the driver passes in
//! ([`Channel::set_clock`], in ticks of whatever counter it reads once per
//! batch of completions; [`Channel::set_tick_scale`] turns tick differences
//! into nanoseconds with a multiply and a shift).

use super::action::CmdId;
use super::channel::Channel;
use super::stats::{IoStats, LunStats, TickScale};
use crate::scsi::{DataDir, Sense};

/// Counters, logged when the channel closes and served by the admin socket.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelStats {
    /// The figures the channel keeps per LUN too, for all its requests.
    #[serde(flatten)]
    pub io: IoStats,
    /// Commands that carried immediate data.
    pub immediate: u64,
    /// Commands with an indirect descriptor table.
    pub indirect: u64,
    /// Indirect tables that did not fit in the IU and were fetched by RDMA READ.
    pub external_tables: u64,
    /// Commands answered TASK SET FULL (initiator exceeded its credits).
    pub task_set_full: u64,
    /// Commands that moved data with zero copies to a RAM backstore.
    pub zero_copy: u64,
    /// SRP_CRED_REQs sent.
    pub cred_reqs: u64,
    /// IUs rejected as malformed or of an unexpected type.
    pub protocol_errors: u64,
}

impl std::ops::AddAssign<&ChannelStats> for ChannelStats {
    fn add_assign(&mut self, o: &ChannelStats) {
        let ChannelStats {
            io,
            immediate,
            indirect,
            external_tables,
            task_set_full,
            zero_copy,
            cred_reqs,
            protocol_errors,
        } = o;
        self.io += io;
        self.immediate += immediate;
        self.indirect += indirect;
        self.external_tables += external_tables;
        self.task_set_full += task_set_full;
        self.zero_copy += zero_copy;
        self.cred_reqs += cred_reqs;
        self.protocol_errors += protocol_errors;
    }
}

/// SAM-5 / SPC-4: LOGICAL UNIT NOT SUPPORTED (the LUN is not mapped).
const ASC_LUN_NOT_SUPPORTED: u8 = 0x25;

impl Channel {
    /// The time now, in ticks (see [`Channel::set_tick_scale`]): the
    /// driver sets it before feeding a batch of completions. Requests that
    /// arrive are stamped with it.
    pub fn set_clock(&mut self, ticks: u64) {
        self.clock = ticks;
    }

    /// How long a tick of [`Channel::set_clock`] is (default: 1 ns).
    pub fn set_tick_scale(&mut self, s: TickScale) {
        self.tick_scale = s;
    }

    /// The figures of each LUN this channel sent commands to.
    pub fn lun_stats(&self) -> &LunStats {
        &self.luns
    }

    /// Applies `f` to the channel's figures and to those of the LUN of
    /// request `id`, if it has one.
    pub(super) fn count(&mut self, id: CmdId, f: impl Fn(&mut IoStats)) {
        f(&mut self.stats.io);
        if let Some(slot) = self.cmds.get(id).and_then(|c| c.stats_slot) {
            if let Some(s) = self.luns.get_mut(slot) {
                f(s);
            }
        }
    }

    /// A request got a context: it is in progress from now, stamped with
    /// the clock.
    pub(super) fn count_entered(&mut self, id: CmdId) {
        let now = self.clock;
        if let Some(c) = self.cmds.get_mut(id) {
            c.arrived = now;
            c.stats_slot = None;
        }
        self.stats.io.enter();
    }

    /// SRP_CMD `id` addresses the LUN numbered `unit` in the target's
    /// table (`None`: no LUN the nexus sees): from now on it counts for
    /// that LUN too.
    pub(super) fn count_command_lun(&mut self, id: CmdId, unit: Option<u16>) {
        let Some(n) = unit else { return };
        let Some(slot) = self.luns.slot(n) else { return };
        if let Some(s) = self.luns.get_mut(slot) {
            s.commands += 1;
            s.enter();
        }
        if let Some(c) = self.cmds.get_mut(id) {
            c.stats_slot = Some(slot);
        }
    }

    /// SRP_CMD `id` for SAM LUN `lun` failed planning with `sense`: it
    /// counts for the LUN the nexus sees there, if any (by the LUN's number
    /// in the target's table, which an ACL's mapping may make differ).
    pub(super) fn count_refused_command_lun(&mut self, id: CmdId, lun: [u8; 8], sense: &Sense) {
        if sense.asc != ASC_LUN_NOT_SUPPORTED {
            let unit = self.nexus.unit(lun);
            self.count_command_lun(id, unit);
        }
    }

    /// Task management request `id` addresses `lun`: it counts for that LUN
    /// if the channel has sent commands to it.
    pub(super) fn count_task_mgmt_lun(&mut self, id: CmdId, lun: [u8; 8]) {
        let Some(slot) = self.nexus.unit(lun).and_then(|n| self.luns.find(n)) else {
            return;
        };
        if let Some(s) = self.luns.get_mut(slot) {
            s.task_mgmt += 1;
            s.enter();
        }
        if let Some(c) = self.cmds.get_mut(id) {
            c.stats_slot = Some(slot);
        }
    }

    /// SRP_CMD `id` was planned to move data `dir`.
    pub(super) fn count_direction(&mut self, id: CmdId, dir: DataDir) {
        match dir {
            DataDir::In => self.count(id, |s| s.reads += 1),
            DataDir::Out => self.count(id, |s| s.writes += 1),
            DataDir::None => {}
        }
    }

    /// The SRP_RSP of `id` is being posted: its status counts.
    pub(super) fn count_response(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get(id) else { return };
        if c.is_task_mgmt {
            return;
        }
        let (status, key) = (c.response.status, c.response.sense.as_ref().map(|s| s.key));
        self.count(id, |s| s.errors.record(status, key));
    }

    /// The SRP_RSP of `id` was sent: its latency counts.
    pub(super) fn count_answered(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get(id) else { return };
        if c.is_task_mgmt {
            return;
        }
        let ns = self.tick_scale.ns(self.clock.saturating_sub(c.arrived));
        self.count(id, |s| s.latency.record(ns));
    }

    /// Request `id` is leaving the channel.
    pub(super) fn count_left(&mut self, id: CmdId) {
        self.count(id, IoStats::leave);
    }
}
