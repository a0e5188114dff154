//! The task set of each LUN as seen across channels: aborting the tasks
//! of other channels (LUN RESET, CLEAR TASK SET, ABORT TASK SET, PREEMPT
//! AND ABORT) and knowing when they have ended (`docs/task-management.md`).
//!
//! Sans I/O and without a lock on the data path. An abort is *published*:
//! it gets the next number of the target-wide abort generation and its
//! scope goes in a short log. Every channel is a [`Member`]: it counts the
//! commands it holds (one uncontended atomic add at entry and one at exit,
//! on its own cache line), looks at the generation (one atomic load) at
//! each event, and when it moved, aborts its commands in the new scopes and
//! acknowledges the generation once those have ended. The function that
//! published waits until every other member has acknowledged it or holds
//! no command ([`TaskSets::drained`]).
//!
//! Why a member holding no command need not acknowledge: it adds to its
//! count before it loads the generation to plan a new command, and the
//! publisher stores the generation before it loads the counts (both
//! sequentially consistent). So a zero count seen after publishing means
//! every command the member held at that time has ended, and any later one
//! is planned after it saw the abort.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::lun::{NexusId, Target};
use super::reservations::RegistrantId;
use super::sense::Sense;

/// How many published aborts are kept for members that have not looked yet.
/// A member further behind aborts every command it holds (the safe side).
const LOG_LEN: usize = 256;

/// Which tasks an abort covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortScope {
    /// Every task of the LUN, from every I_T nexus (LOGICAL UNIT RESET;
    /// CLEAR TASK SET with TST = 000b).
    Lun(u16),
    /// The tasks of the LUN from one I_T nexus (ABORT TASK SET, SAM-5
    /// 7.3).
    Nexus { lun: u16, nexus: NexusId },
    /// The tasks of the LUN from the I_T nexuses of these registrants
    /// (PREEMPT AND ABORT, SPC-4 5.13.11.2.3).
    Registrants {
        lun: u16,
        registrants: Vec<RegistrantId>,
    },
    /// Everything (a member that fell behind the log).
    All,
}

impl AbortScope {
    /// Whether a task of `lun` from I_T nexus `nexus` is aborted.
    pub fn covers(&self, lun: u16, nexus: &NexusId) -> bool {
        match self {
            AbortScope::Lun(l) => *l == lun,
            AbortScope::Nexus { lun: l, nexus: n } => *l == lun && n == nexus,
            AbortScope::Registrants { lun: l, registrants } => {
                *l == lun && registrants.iter().any(|g| g.covers(nexus))
            }
            AbortScope::All => true,
        }
    }
}

/// A published abort: its scope, and the I_T nexus whose task management
/// function it is (none for PREEMPT AND ABORT and for a member behind the
/// log). That nexus's aborted tasks are answered TASK ABORTED
/// (`docs/task-management.md`); other nexuses' end without a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub scope: AbortScope,
    pub issuer: Option<NexusId>,
}

impl Published {
    /// Whether the abort covers a task of `lun` from `nexus`, and whether
    /// that task is to be answered (`nexus` issued the function).
    pub fn answers(&self, lun: u16, nexus: &NexusId) -> Option<bool> {
        self.scope
            .covers(lun, nexus)
            .then(|| self.issuer.as_ref() == Some(nexus))
    }
}

/// What the publisher reads of a member.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shared {
    /// Commands the member holds (task management requests included).
    held: AtomicU32,
    /// The last generation whose aborted commands have all ended here.
    acked: AtomicU64,
}

/// The target's registry of channels and published aborts.
#[derive(Debug, Default)]
pub struct TaskSets {
    gen: AtomicU64,
    log: Mutex<VecDeque<(u64, Published)>>,
    members: Mutex<Vec<Weak<Shared>>>,
}

impl TaskSets {
    /// A new channel joins, having seen every abort published so far.
    pub fn join(&self) -> Member {
        let shared = Arc::new(Shared::default());
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(&shared));
        let seen = self.gen.load(Ordering::SeqCst);
        shared.acked.store(seen, Ordering::Release);
        Member { shared, seen }
    }

    /// Publishes an abort by the function of nexus `issuer` (if any);
    /// returns its generation, which [`drained`](Self::drained) waits for.
    pub fn publish(&self, scope: AbortScope, issuer: Option<NexusId>) -> u64 {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        // Under the log lock, so the log is in generation order.
        let g = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        if log.len() == LOG_LEN {
            log.pop_front();
        }
        log.push_back((g, Published { scope, issuer }));
        g
    }

    /// Whether an abort published after generation `since` covers a task
    /// of `lun` from `nexus` (one atomic load when none was).
    pub fn aborted_since(&self, since: u64, lun: u16, nexus: &NexusId) -> bool {
        if self.gen.load(Ordering::SeqCst) == since {
            return false;
        }
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.front().is_some_and(|&(g, _)| g > since + 1) {
            return true; // fell out of the log: the safe side
        }
        log.iter().any(|(g, p)| *g > since && p.scope.covers(lun, nexus))
    }

    /// The latest generation published.
    pub fn current(&self) -> u64 {
        self.gen.load(Ordering::SeqCst)
    }

    /// Whether every member but `me` has ended the commands of the aborts
    /// up to `gen` (acknowledged it, or holds no command).
    pub fn drained(&self, gen: u64, me: &Member) -> bool {
        let m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().filter_map(Weak::upgrade).all(|s| {
            Arc::ptr_eq(&s, &me.shared)
                || s.acked.load(Ordering::Acquire) >= gen
                || s.held.load(Ordering::SeqCst) == 0
        })
    }
}

impl Target {
    /// Establishes unit attention `ua` on `lun` for every I_T nexus that
    /// sees it but `except` (the same initiator port through another target
    /// port is another I_T nexus, SAM-5 4.6).
    pub fn unit_attention_others(&self, lun: u16, except: &NexusId, ua: Sense) {
        let t = self.table.load();
        for n in self.live_nexuses() {
            if n.id() != *except && t.visible(lun, n.initiator()).is_some() {
                n.add_ua(lun, ua);
            }
        }
    }
}

/// One channel's membership (owned by the channel, used by its thread only).
#[derive(Debug)]
pub struct Member {
    shared: Arc<Shared>,
    seen: u64,
}

impl Member {
    /// A command entered the channel. Call before planning it.
    pub fn entered(&self) {
        self.shared.held.fetch_add(1, Ordering::SeqCst);
    }

    /// A command left the channel (its work all done).
    pub fn left(&self) {
        self.shared.held.fetch_sub(1, Ordering::Release);
    }

    /// Whether aborts were published since [`news`](Self::news) last ran.
    pub fn behind(&self, sets: &TaskSets) -> bool {
        sets.gen.load(Ordering::SeqCst) != self.seen
    }

    /// The scopes published since the last call, oldest first.
    pub fn news(&mut self, sets: &TaskSets) -> Vec<Published> {
        let log = sets.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = sets.gen.load(Ordering::SeqCst);
        let first = log.front().map_or(now + 1, |&(g, _)| g);
        let mut out: Vec<Published> = if self.seen + 1 < first && self.seen < now {
            tracing::warn!(
                behind = now - self.seen,
                "channel fell behind the published aborts; aborting all its tasks"
            );
            vec![Published {
                scope: AbortScope::All,
                issuer: None,
            }]
        } else {
            Vec::new()
        };
        out.extend(
            log.iter()
                .filter(|&&(g, _)| g > self.seen && g <= now)
                .map(|(_, p)| p.clone()),
        );
        self.seen = now;
        out
    }

    /// The commands of every scope seen have ended here.
    pub fn ack(&self) {
        self.shared.acked.store(self.seen, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_member_counts_as_drained_and_a_busy_one_must_acknowledge() {
        let sets = TaskSets::default();
        let me = sets.join();
        let mut other = sets.join();
        let nx = |i: u8, port: u16| NexusId {
            initiator: [i; 16],
            port,
        };
        let g = sets.publish(AbortScope::Lun(3), Some(nx(7, 1)));
        assert!(sets.drained(g, &me), "the other member holds nothing");
        other.entered();
        assert!(!sets.drained(g, &me));
        let news = other.news(&sets);
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].scope, AbortScope::Lun(3));
        assert_eq!(news[0].answers(3, &nx(7, 1)), Some(true), "the issuer's own task");
        assert_eq!(news[0].answers(3, &nx(8, 1)), Some(false), "another initiator's");
        assert_eq!(
            news[0].answers(3, &nx(7, 2)),
            Some(false),
            "the issuer's initiator port through another target port"
        );
        assert_eq!(news[0].answers(4, &nx(7, 1)), None, "another LUN");
        assert!(!other.behind(&sets));
        other.ack();
        assert!(sets.drained(g, &me));
        let g2 = sets.publish(AbortScope::Lun(4), None);
        assert!(!sets.drained(g2, &me));
        other.left();
        assert!(sets.drained(g2, &me));
        drop(other);
        assert!(sets.drained(g2, &me));
    }

    #[test]
    fn a_member_behind_the_log_aborts_everything() {
        let sets = TaskSets::default();
        let mut m = sets.join();
        for l in 0..(LOG_LEN as u16 + 2) {
            sets.publish(AbortScope::Lun(l), None);
        }
        let news = m.news(&sets);
        assert_eq!(news[0].scope, AbortScope::All);
        assert_eq!(news.len(), LOG_LEN + 1);
        let nx = |port: u16| NexusId {
            initiator: [1; 16],
            port,
        };
        let one = AbortScope::Nexus { lun: 1, nexus: nx(1) };
        assert!(one.covers(1, &nx(1)));
        assert!(!one.covers(1, &nx(2)), "ABORT TASK SET: one I_T nexus only");
        let all_ports = AbortScope::Registrants {
            lun: 1,
            registrants: vec![RegistrantId::all_ports([1; 16])],
        };
        assert!(all_ports.covers(1, &nx(1)) && all_ports.covers(1, &nx(2)));
        let one_port = AbortScope::Registrants {
            lun: 1,
            registrants: vec![RegistrantId::nexus(&nx(2))],
        };
        assert!(!one_port.covers(1, &nx(1)) && one_port.covers(1, &nx(2)));
        assert!(!AbortScope::Lun(1).covers(2, &nx(1)));
    }
}
