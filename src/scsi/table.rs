//! The LUN table at one moment (which commands read without locks) and
//! who may see which LUN: access lists, login addresses, and the LUN
//! numbers each initiator sees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::disk::Disk;
use super::drain::InFlight;
use super::lun::{InitiatorPortId, LunConfig, LunReservations};

/// Which initiators may use a target or a LUN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Every initiator.
    #[default]
    Any,
    /// Only these initiator ports.
    Only(HashSet<InitiatorPortId>),
}

impl Access {
    /// Whether `ini` is allowed.
    pub fn allows(&self, ini: &InitiatorPortId) -> bool {
        match self {
            Access::Any => true,
            Access::Only(set) => set.contains(ini),
        }
    }
}

/// Where initiators may log in from over RDMA/CM: the addresses of ACLs
/// that name some. An initiator's own ACL decides for it; an initiator
/// without one falls under the `ANY` ACL's addresses. No address: from
/// anywhere. A login without an IP peer (InfiniBand CM) never matches an
/// address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFilter {
    /// `None`: the ANY ACL. An empty list: no restriction.
    rules: BTreeMap<Option<InitiatorPortId>, Vec<ipnet::IpNet>>,
}

impl PeerFilter {
    /// The ACL of `ini` (`None`: ANY) accepts logins only from `nets`
    /// (empty: from anywhere).
    pub fn set(&mut self, ini: Option<InitiatorPortId>, nets: Vec<ipnet::IpNet>) {
        self.rules.insert(ini, nets);
    }

    /// Whether `ini` may log in from `peer`.
    pub fn allows(&self, ini: &InitiatorPortId, peer: Option<std::net::IpAddr>) -> bool {
        let rule = self.rules.get(&Some(*ini)).or_else(|| self.rules.get(&None));
        match rule {
            None => true,
            Some(nets) if nets.is_empty() => true,
            Some(nets) => peer.is_some_and(|p| {
                // An IPv4 peer may come as an IPv4-mapped IPv6 address.
                let p = match p {
                    std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(p, std::net::IpAddr::V4),
                    v4 => v4,
                };
                nets.iter().any(|n| n.contains(&p))
            }),
        }
    }
}

/// A LUN's storage and reservations; kept (shared) across table changes
/// that do not replace the LUN.
#[derive(Debug)]
pub(super) struct LunEntry {
    pub(super) disk: Disk,
    pub(super) pr: LunReservations,
    /// Unique among every LUN the target ever had: a command planned for
    /// a LUN that was removed (and maybe added again) does not run.
    pub(super) uid: u64,
    /// The memory of a RAM LUN present at start is registered with each
    /// RDMA device: RDMA may move its data directly. LUNs added while
    /// running go through the channel's buffers.
    pub(super) zero_copy: bool,
    /// Commands running on it: a removed LUN is flushed after the last
    /// (`drain.rs`).
    pub(super) in_flight: InFlight,
}

impl LunEntry {
    /// Counts a command in for as long as it holds the result (one whose
    /// backstore I/O completes later, on an asynchronous engine), or
    /// refuses it: the LUN was removed.
    pub(super) fn count_in(self: &Arc<Self>) -> Option<Counted> {
        self.in_flight.try_enter().then(|| Counted(Arc::clone(self)))
    }
}

/// A command counted in on its LUN (`drain.rs`) that owns the LUN's
/// entry; it counts out when dropped.
#[derive(Debug)]
pub(super) struct Counted(Arc<LunEntry>);

impl std::ops::Deref for Counted {
    type Target = LunEntry;

    fn deref(&self) -> &LunEntry {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.in_flight.leave();
    }
}

/// A LUN in the table: its storage and who sees it how.
#[derive(Clone, Debug)]
pub(super) struct Mapped {
    pub(super) entry: Arc<LunEntry>,
    /// Further restricts the target's access list for this LUN.
    pub(super) access: Option<Access>,
    pub(super) read_only_for: HashSet<InitiatorPortId>,
    /// The configuration it was made from (what a change is compared to).
    pub(super) config: LunConfig,
}

impl Mapped {
    /// Whether an ACL maps this LUN read-only for `ini`: its writes get
    /// DATA PROTECT, WRITE PROTECTED (checked without hashing when none is).
    pub(super) fn read_only_to(&self, ini: &InitiatorPortId) -> bool {
        !self.read_only_for.is_empty() && self.read_only_for.contains(ini)
    }
}

/// The LUN numbers one initiator uses where they differ from the table's
/// (an ACL's mapped LUNs, LIO's `mapped_lun`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct View {
    /// The initiator's number to the table's LUN.
    to_lun: BTreeMap<u16, u16>,
    /// The table's LUN to the initiator's number.
    to_number: BTreeMap<u16, u16>,
}

/// The LUN table and access lists at one moment. Commands read it
/// without locks (`ArcSwap`); a change builds a new table, calls
/// [`index`](Self::index), and swaps it in.
#[derive(Clone, Debug, Default)]
pub(super) struct LunTable {
    pub(super) luns: BTreeMap<u16, Mapped>,
    pub(super) access: Access,
    pub(super) peers: PeerFilter,
    /// Per initiator, its mapped LUN numbers (from the LUNs' `mapped_as`).
    views: HashMap<InitiatorPortId, View>,
}

impl LunTable {
    /// An empty table with these access lists.
    pub(super) fn new(access: Access, peers: PeerFilter) -> LunTable {
        LunTable {
            access,
            peers,
            ..LunTable::default()
        }
    }

    /// Builds the initiators' views from the LUNs' mapped numbers; called
    /// once the LUNs are in.
    pub(super) fn index(&mut self) {
        self.views.clear();
        for (&lun, m) in &self.luns {
            for (ini, &number) in &m.config.mapped_as {
                let v = self.views.entry(*ini).or_default();
                v.to_lun.insert(number, lun);
                v.to_number.insert(lun, number);
            }
        }
    }

    /// The LUN if `ini` may see it (by the table's number).
    pub(super) fn visible(&self, lun: u16, ini: &InitiatorPortId) -> Option<&Mapped> {
        let m = self.luns.get(&lun)?;
        let lun_ok = m.access.as_ref().map_or(true, |a| a.allows(ini));
        (self.access.allows(ini) && lun_ok).then_some(m)
    }

    /// The LUN that `ini` addresses as `number`, with its number in the
    /// table, if `ini` sees it. An ACL may present a LUN under another
    /// number (SAM-5 4.6.4: the LUN identifies the logical unit to the
    /// initiator); a LUN presented so is not reachable under its own.
    /// Every LUN an initiator sends is resolved here.
    pub(super) fn resolve(&self, ini: &InitiatorPortId, number: u16) -> Option<(u16, &Mapped)> {
        let lun = match self.views.is_empty() {
            true => number,
            false => match self.views.get(ini) {
                None => number,
                Some(v) => match v.to_lun.get(&number) {
                    Some(&l) => l,
                    None if v.to_number.contains_key(&number) => return None,
                    None => number,
                },
            },
        };
        Some((lun, self.visible(lun, ini)?))
    }

    /// What `ini` sees: (its number, the table's LUN), ascending by its
    /// number.
    pub(super) fn lun_map(&self, ini: &InitiatorPortId) -> Vec<(u16, u16)> {
        let view = self.views.get(ini);
        let mut v: Vec<(u16, u16)> = self
            .luns
            .keys()
            .filter(|&&l| self.visible(l, ini).is_some())
            .map(|&l| (view.and_then(|v| v.to_number.get(&l)).copied().unwrap_or(l), l))
            .filter(|&(n, l)| self.resolve(ini, n).map(|r| r.0) == Some(l))
            .collect();
        v.sort_unstable();
        v
    }

    /// The table's numbers of the LUNs `ini` sees, ascending.
    pub(super) fn luns_for(&self, ini: &InitiatorPortId) -> Vec<u16> {
        let mut v: Vec<u16> = self.lun_map(ini).into_iter().map(|(_, l)| l).collect();
        v.sort_unstable();
        v
    }
}
