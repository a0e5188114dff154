//! Who may log in, from where, and which LUNs each initiator sees under
//! which number: the `[[acl]]` settings turned into the SCSI target's
//! access lists (`docs/configuration.md`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use super::{err, ConfigError, Origin, Setting, Settings};
use crate::scsi::lun::PeerFilter;
use crate::scsi::{Access, InitiatorPortId, LunConfig, MAX_LUN};
use crate::wire::parse_hex;

/// A LUN in an ACL's list: the LUN (its `[[lun]]` number) and the number
/// the initiator sees it as (LIO's mapped LUN; the same by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclLun {
    pub lun: u16,
    pub mapped_lun: u16,
}

impl AclLun {
    /// LUN `lun` under its own number.
    pub fn same(lun: u16) -> AclLun {
        AclLun { lun, mapped_lun: lun }
    }
}

/// As written in a config file: `3`, or `{ lun = 3, mapped_lun = 0 }`.
impl fmt::Display for AclLun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lun == self.mapped_lun {
            write!(f, "{}", self.lun)
        } else {
            write!(f, "{{ lun = {}, mapped_lun = {} }}", self.lun, self.mapped_lun)
        }
    }
}

/// An ACL's list as written in a config file.
pub(super) fn list_text(v: &[AclLun]) -> String {
    let items: Vec<String> = v.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// What the ACLs make of one LUN.
#[derive(Debug, Default)]
pub(super) struct LunAccess {
    /// Who sees it (`None`: everyone the target lets in).
    pub(super) who: Option<HashSet<InitiatorPortId>>,
    /// Who sees it write-protected.
    pub(super) read_only: HashSet<InitiatorPortId>,
    /// Who sees it under another number, and that number.
    pub(super) mapped_as: BTreeMap<InitiatorPortId, u16>,
}

/// `file:line` (or the flag or parameter) of a setting, for a message
/// that points at a second place.
fn place(o: &Origin) -> String {
    match o {
        Origin::File { path, line, .. } => format!("{}:{line}", path.display()),
        Origin::Flag(f) | Origin::Param(f) => (*f).to_owned(),
        Origin::Default => String::new(),
    }
}

/// Checks one ACL's LUN list: every LUN exists and appears once, and no
/// two LUNs take one number (an initiator addresses a logical unit by its
/// number, SAM-5 4.6.4).
fn check_list(ls: &Setting<Vec<AclLun>>, numbers: &BTreeSet<u16>) -> Result<(), ConfigError> {
    let mut luns = HashSet::new();
    let mut taken: BTreeMap<u16, u16> = BTreeMap::new();
    for e in &ls.value {
        if !numbers.contains(&e.lun) {
            return err(&ls.origin, e, "no such LUN");
        }
        if e.mapped_lun > MAX_LUN {
            return err(&ls.origin, e, format!("LUN numbers go from 0 to {MAX_LUN}"));
        }
        if !luns.insert(e.lun) {
            return err(&ls.origin, e, format!("LUN {} is in this list twice", e.lun));
        }
        if let Some(other) = taken.insert(e.mapped_lun, e.lun) {
            return err(
                &ls.origin,
                e,
                format!(
                    "LUN {other} and LUN {} would both be LUN {} for this initiator",
                    e.lun, e.mapped_lun
                ),
            );
        }
    }
    Ok(())
}

impl Settings {
    /// The target's access list and each LUN's (who sees it, read-only,
    /// under which number), from the ACLs. Without a config file and
    /// without `--allow`, anyone may log in.
    pub(super) fn access(
        &self,
        luns: &[LunConfig],
        warnings: &mut Vec<String>,
    ) -> Result<(Access, BTreeMap<u16, LunAccess>), ConfigError> {
        let mut per_lun: BTreeMap<u16, LunAccess> = BTreeMap::new();
        if self.acls.is_empty() {
            if self.from_file.is_some() || self.explicit_access {
                warnings.push(
                    "the config file has no [[acl]]: no initiator may log in (add one, e.g. initiator = \"ANY\")"
                        .into(),
                );
                return Ok((Access::Only(HashSet::new()), per_lun));
            }
            return Ok((Access::Any, per_lun));
        }
        let numbers: BTreeSet<u16> = luns.iter().map(|l| l.lun).collect();
        let mut ids: HashSet<InitiatorPortId> = HashSet::new();
        let mut any = None;
        // The first per-initiator LUN list, which an ANY ACL would void.
        let mut first_list = None;
        let mut read_only: HashSet<InitiatorPortId> = HashSet::new();
        for a in &self.acls {
            let i = &a.initiator;
            let id = if i.value.eq_ignore_ascii_case("any") {
                any = Some(i);
                None
            } else {
                let id = parse_hex::<16>(&i.value).ok_or(ConfigError {
                    origin: i.origin.clone(),
                    value: format!("{:?}", i.value),
                    reason: "expected ANY or a 32-hex-digit initiator port ID".into(),
                })?;
                if !ids.insert(id) {
                    return err(
                        &i.origin,
                        format!("{:?}", i.value),
                        "this initiator has another ACL already",
                    );
                }
                Some(id)
            };
            if let Some(ro) = a.read_only.as_ref().filter(|r| r.value) {
                match id {
                    Some(id) => {
                        read_only.insert(id);
                    }
                    None => {
                        return err(
                            &ro.origin,
                            ro.value,
                            "the ANY ACL cannot be read-only (set read_only on the LUNs instead)",
                        )
                    }
                }
            }
            match (&a.luns, id) {
                (Some(ls), id) => {
                    check_list(ls, &numbers)?;
                    let Some(id) = id else {
                        return err(&ls.origin, list_text(&ls.value), "the ANY ACL maps every LUN");
                    };
                    first_list.get_or_insert(ls);
                    for e in &ls.value {
                        let l = per_lun.entry(e.lun).or_default();
                        l.who.get_or_insert_with(HashSet::new).insert(id);
                        if e.mapped_lun != e.lun {
                            l.mapped_as.insert(id, e.mapped_lun);
                        }
                    }
                }
                (None, Some(id)) => {
                    for n in &numbers {
                        let l = per_lun.entry(*n).or_default();
                        l.who.get_or_insert_with(HashSet::new).insert(id);
                    }
                }
                (None, None) => {}
            }
        }
        if let Some(i) = any {
            if self.from_file.is_some() {
                warnings.push(format!(
                    "{}: every initiator may log in and see every LUN (initiator = \"ANY\")",
                    place(&i.origin)
                ));
            }
            if let Some(ls) = first_list {
                return err(
                    &i.origin,
                    format!("{:?}", i.value),
                    format!(
                        "an ANY ACL lets everyone see every LUN: per-initiator LUN lists (acl.luns at {}) would have no effect",
                        place(&ls.origin)
                    ),
                );
            }
            // Everyone sees every LUN; an initiator's own ACL may still
            // make them read-only for it.
            let all = numbers.into_iter().map(|n| {
                let a = LunAccess {
                    read_only: read_only.clone(),
                    ..LunAccess::default()
                };
                (n, a)
            });
            return Ok((Access::Any, all.collect()));
        }
        let mut out = BTreeMap::new();
        for n in numbers {
            let mut a = per_lun.remove(&n).unwrap_or_default();
            let who = a.who.get_or_insert_with(HashSet::new);
            a.read_only = who.intersection(&read_only).copied().collect();
            out.insert(n, a);
        }
        Ok((Access::Only(ids), out))
    }

    /// The addresses each ACL accepts RDMA/CM logins from.
    pub(super) fn peer_filter(&self) -> Result<PeerFilter, ConfigError> {
        let mut f = PeerFilter::default();
        for a in &self.acls {
            let nets = match &a.address {
                None => Vec::new(),
                Some(s) => {
                    let v = s.value.trim();
                    let net = v
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                    match net {
                        Ok(n) => vec![n.trunc()],
                        Err(_) => {
                            return err(
                                &s.origin,
                                format!("{:?}", s.value),
                                "expected an IP address or network (10.0.0.5, 10.0.0.0/24, fe80::/64)",
                            )
                        }
                    }
                }
            };
            let id = if a.initiator.value.eq_ignore_ascii_case("any") {
                None
            } else {
                parse_hex::<16>(&a.initiator.value)
            };
            f.set(id, nets);
        }
        Ok(f)
    }
}
