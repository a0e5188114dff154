//! The LUN table at one moment (which commands read without locks) and
//! who may see which LUN: access lists, login addresses, and the LUN
//! numbers each initiator sees.

use std::collections::{BTreeMap, HashSet};
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

/// The LUN table and access lists at one moment. Commands read it
/// without locks (`ArcSwap`); a change builds a new table and swaps it in.
#[derive(Clone, Debug)]
pub(super) struct LunTable {
    pub(super) luns: BTreeMap<u16, Mapped>,
    pub(super) access: Access,
    pub(super) peers: PeerFilter,
}

impl LunTable {
    /// The LUN if `ini` may see it.
    pub(super) fn visible(&self, lun: u16, ini: &InitiatorPortId) -> Option<&Mapped> {
        let m = self.luns.get(&lun)?;
        let lun_ok = m.access.as_ref().map_or(true, |a| a.allows(ini));
        (self.access.allows(ini) && lun_ok).then_some(m)
    }

    /// LUN numbers `ini` may see, ascending.
    pub(super) fn luns_for(&self, ini: &InitiatorPortId) -> Vec<u16> {
        self.luns
            .keys()
            .copied()
            .filter(|&l| self.visible(l, ini).is_some())
            .collect()
    }
}
