//! Asymmetric logical unit access (SPC-4 5.16), sans I/O.
//!
//! Each RDMA port a login arrives on (`device/port`, e.g. `rxe0/1`) is an
//! SCSI target port with a relative target port identifier; every target
//! port belongs to one target port group, whose primary target port
//! asymmetric access state every logical unit has through that port
//! (srptd's LUNs all share the groups). Groups are configured
//! ([`PortGroupConfig`]) or made on the fly: one group per port nobody
//! configured, active/optimized.
//!
//! ALUA is implicit only (TPGS = 01b): the state changes through the
//! admin socket ([`Target::set_alua_state`]), never through SET TARGET
//! PORT GROUPS. What each state allows is [`AccessState::refusal`]; the
//! data path reads a group's state with one atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::backstore::ConfigError;
use super::cdb::Cmd;
use super::lun::{Nexus, Target};
use super::sense::Sense;

/// TPGS field of the standard INQUIRY data (SPC-4 6.6.2, table 144):
/// 01b, implicit asymmetric access only.
pub const TPGS: u8 = 0b01;

/// Most target ports srptd names (RDMA ports seen or configured);
/// relative target port identifiers go from 1 to this.
pub const MAX_TARGET_PORTS: usize = 256;

/// Most ports in one group: TARGET PORT COUNT is one byte (SPC-4 6.37,
/// table 180).
pub const MAX_PORTS_PER_GROUP: usize = 255;

/// Name of the port [`Target::nexus`] uses when the caller names none
/// (tests, tools): relative target port 1 if any port is known.
pub const DEFAULT_PORT: &str = "default/1";

/// Primary target port asymmetric access states (SPC-4 5.16.2.4, codes of
/// table 179).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessState {
    ActiveOptimized,
    ActiveNonOptimized,
    Standby,
    Unavailable,
    Transitioning,
}

impl AccessState {
    /// Every state, in code order.
    pub const ALL: [AccessState; 5] = [
        AccessState::ActiveOptimized,
        AccessState::ActiveNonOptimized,
        AccessState::Standby,
        AccessState::Unavailable,
        AccessState::Transitioning,
    ];

    /// ASYMMETRIC ACCESS STATE code (SPC-4 6.37, table 179).
    pub const fn code(self) -> u8 {
        match self {
            AccessState::ActiveOptimized => 0x0,
            AccessState::ActiveNonOptimized => 0x1,
            AccessState::Standby => 0x2,
            AccessState::Unavailable => 0x3,
            AccessState::Transitioning => 0xf,
        }
    }

    fn from_code(c: u8) -> AccessState {
        AccessState::ALL
            .into_iter()
            .find(|s| s.code() == c)
            .unwrap_or(AccessState::Unavailable)
    }

    /// The name used in the config file, the admin socket and logs.
    pub const fn name(self) -> &'static str {
        match self {
            AccessState::ActiveOptimized => "active/optimized",
            AccessState::ActiveNonOptimized => "active/non-optimized",
            AccessState::Standby => "standby",
            AccessState::Unavailable => "unavailable",
            AccessState::Transitioning => "transitioning",
        }
    }

    /// The state named `s` ([`name`](Self::name)).
    pub fn parse(s: &str) -> Option<AccessState> {
        AccessState::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Why `cmd` may not run through a port in this state: the sense of
    /// its CHECK CONDITION, or `None` if it runs.
    ///
    /// - active/optimized, active/non-optimized: every command
    ///   (SPC-4 5.16.2.4.2, 5.16.2.4.3);
    /// - standby (5.16.2.4.4): INQUIRY, MODE SENSE/SELECT, REPORT LUNS,
    ///   REPORT TARGET PORT GROUPS, REQUEST SENSE, PERSISTENT RESERVE
    ///   IN/OUT; others NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT
    ///   IN STANDBY STATE (04h/0Bh);
    /// - unavailable (5.16.2.4.5): INQUIRY, REPORT LUNS, REPORT TARGET PORT
    ///   GROUPS, REQUEST SENSE; others 04h/0Ch TARGET PORT IN UNAVAILABLE
    ///   STATE;
    /// - transitioning (5.16.2.5): the same; others 04h/0Ah ASYMMETRIC
    ///   ACCESS STATE TRANSITION.
    ///
    /// REPORT SUPPORTED OPERATION CODES is served in every state (the
    /// device server "may support other commands", 5.16.2.4.4-5).
    pub fn refusal(self, cmd: &Cmd) -> Option<Sense> {
        let always = matches!(
            cmd,
            Cmd::Inquiry { .. }
                | Cmd::ReportLuns { .. }
                | Cmd::RequestSense { .. }
                | Cmd::ReportTargetPortGroups { .. }
                | Cmd::ReportOpcodes { .. }
        );
        match self {
            AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => None,
            _ if always => None,
            AccessState::Standby => match cmd {
                Cmd::ModeSense { .. }
                | Cmd::ModeSelect { .. }
                | Cmd::PersistentReserveIn(_)
                | Cmd::PersistentReserveOut(_) => None,
                _ => Some(Sense::port_in_standby()),
            },
            AccessState::Unavailable => Some(Sense::port_unavailable()),
            AccessState::Transitioning => Some(Sense::access_state_transition()),
        }
    }
}

impl std::fmt::Display for AccessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `s` names an RDMA port: `device/port`, a device name without
/// `/` or white space and a port number from 1 to 255.
pub fn valid_port_name(s: &str) -> bool {
    let Some((dev, port)) = s.rsplit_once('/') else {
        return false;
    };
    let dev_ok = !dev.is_empty() && dev.len() <= 64 && !dev.contains(|c: char| c == '/' || c.is_whitespace());
    dev_ok && port.parse::<u8>().is_ok_and(|p| p != 0) && !port.starts_with('0')
}

/// One configured target port group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroupConfig {
    /// TARGET PORT GROUP identifier, 1 to 65535.
    pub id: u16,
    /// Its ports, `device/port` (e.g. `rxe0/1`), 1 to
    /// [`MAX_PORTS_PER_GROUP`]; each in one group only.
    pub ports: Vec<String>,
    /// The state at start.
    pub state: AccessState,
}

/// A configured group's field that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupField {
    Id,
    Ports,
    /// `ports[j]`.
    Port(usize),
}

/// What is wrong with configured group number `group` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupError {
    pub group: usize,
    pub field: GroupField,
    pub reason: &'static str,
}

/// Checks configured groups: identifiers 1 to 65535 and unique, 1 to
/// [`MAX_PORTS_PER_GROUP`] well-formed ports each, no port twice, at most
/// [`MAX_TARGET_PORTS`] ports in all.
pub fn check_groups(cfg: &[PortGroupConfig]) -> Result<(), GroupError> {
    let mut ports = 0;
    for (i, g) in cfg.iter().enumerate() {
        let e = |field, reason| GroupError {
            group: i,
            field,
            reason,
        };
        if g.id == 0 {
            return Err(e(GroupField::Id, "identifiers go from 1 to 65535"));
        }
        if cfg[..i].iter().any(|h| h.id == g.id) {
            return Err(e(GroupField::Id, "another group has this identifier"));
        }
        if g.ports.is_empty() || g.ports.len() > MAX_PORTS_PER_GROUP {
            return Err(e(GroupField::Ports, "a group has 1 to 255 ports"));
        }
        for (j, p) in g.ports.iter().enumerate() {
            let f = GroupField::Port(j);
            if !valid_port_name(p) {
                return Err(e(f, "expected device/port, e.g. rxe0/1"));
            }
            let earlier = cfg[..i].iter().flat_map(|h| h.ports.iter()).chain(&g.ports[..j]);
            if earlier.clone().any(|q| q == p) {
                return Err(e(f, "the port is in another group already"));
            }
            ports += 1;
            if ports > MAX_TARGET_PORTS {
                return Err(e(f, "too many target ports (at most 256)"));
            }
        }
    }
    Ok(())
}

/// STATUS CODE of a descriptor (SPC-4 6.37, table 181): 02h, the state
/// was changed by implicit behaviour (here: the administrator).
const STATUS_IMPLICIT: u8 = 0x02;

/// A target port group: its identifier and state.
#[derive(Debug)]
pub struct PortGroup {
    id: u16,
    state: AtomicU8,
    status: AtomicU8,
}

impl PortGroup {
    fn new(id: u16, state: AccessState) -> PortGroup {
        PortGroup {
            id,
            state: AtomicU8::new(state.code()),
            status: AtomicU8::new(0),
        }
    }

    /// The group's state now.
    pub fn state(&self) -> AccessState {
        AccessState::from_code(self.state.load(Ordering::Acquire))
    }
}

/// A target port: an RDMA port with its relative target port identifier
/// and group.
#[derive(Debug)]
pub struct TargetPort {
    rtpi: u16,
    name: String,
    group: Arc<PortGroup>,
}

impl TargetPort {
    /// RELATIVE TARGET PORT IDENTIFIER (SPC-4 3.1.120), from 1.
    pub fn relative_id(&self) -> u16 {
        self.rtpi
    }

    /// `device/port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its group's identifier.
    pub fn group_id(&self) -> u16 {
        self.group.id
    }

    /// Its group's state now.
    pub fn state(&self) -> AccessState {
        self.group.state()
    }

    /// The designators of this port in the Device Identification VPD page:
    /// relative target port (SPC-4 7.8.6.7) and target port group
    /// (7.8.6.8), both with PROTOCOL IDENTIFIER 4h (SRP), PIV = 1, code set
    /// binary, association 01b (the target port).
    pub fn designators(&self) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&[0x41, 0x94, 0x00, 4]);
        d[6..8].copy_from_slice(&self.rtpi.to_be_bytes());
        d[8..12].copy_from_slice(&[0x41, 0x95, 0x00, 4]);
        d[14..16].copy_from_slice(&self.group.id.to_be_bytes());
        d
    }
}

/// A group as management shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    pub id: u16,
    pub state: &'static str,
    /// `(relative target port identifier, device/port)`, ascending.
    pub ports: Vec<PortInfo>,
}

/// A port of a [`GroupInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortInfo {
    pub relative_port: u16,
    pub name: String,
}

/// Why a state change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AluaError {
    #[error("no target port group {0}")]
    NoSuchGroup(u16),
}

#[derive(Debug, Default)]
struct Registry {
    /// Index `i` has relative target port identifier `i + 1`.
    ports: Vec<Arc<TargetPort>>,
    /// Ascending by identifier.
    groups: Vec<Arc<PortGroup>>,
}

impl Registry {
    fn group(&self, id: u16) -> Option<&Arc<PortGroup>> {
        self.groups.iter().find(|g| g.id == id)
    }

    fn add_port(&mut self, name: &str, group: Arc<PortGroup>) -> Option<Arc<TargetPort>> {
        if self.ports.len() >= MAX_TARGET_PORTS {
            return None;
        }
        let p = Arc::new(TargetPort {
            rtpi: (self.ports.len() + 1) as u16,
            name: name.to_owned(),
            group,
        });
        self.ports.push(Arc::clone(&p));
        Some(p)
    }

    fn add_group(&mut self, g: PortGroup) -> Arc<PortGroup> {
        let g = Arc::new(g);
        let at = self.groups.partition_point(|x| x.id < g.id);
        self.groups.insert(at, Arc::clone(&g));
        g
    }
}

/// The target ports and groups of a target.
#[derive(Debug, Default)]
pub struct Alua {
    reg: Mutex<Registry>,
}

impl Alua {
    /// The configured groups, checked ([`check_groups`]). Their ports get relative target port identifiers 1, 2, ...
    /// in the order listed.
    pub fn new(cfg: &[PortGroupConfig]) -> Result<Alua, ConfigError> {
        check_groups(cfg).map_err(|e| {
            let g = &cfg[e.group];
            let (k, value) = match e.field {
                GroupField::Id => ("id".to_owned(), g.id.to_string()),
                GroupField::Ports => ("ports".to_owned(), format!("{} ports", g.ports.len())),
                GroupField::Port(j) => (format!("ports[{j}]"), g.ports[j].clone()),
            };
            ConfigError::Parse {
                field: format!("port_groups[{}].{k}", e.group),
                value,
                reason: e.reason,
            }
        })?;
        let mut reg = Registry::default();
        for g in cfg {
            let group = reg.add_group(PortGroup::new(g.id, g.state));
            for p in &g.ports {
                // check_groups bounds the ports: always added.
                let _ = reg.add_port(p, Arc::clone(&group));
            }
        }
        Ok(Alua { reg: Mutex::new(reg) })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target port named `name` (`device/port`); a port not known yet
    /// gets the next relative target port identifier and a group of its
    /// own (the smallest unused identifier), active/optimized. `None` when
    /// [`MAX_TARGET_PORTS`] are known already.
    pub fn port(&self, name: &str) -> Option<Arc<TargetPort>> {
        let mut reg = self.lock();
        if let Some(p) = reg.ports.iter().find(|p| p.name == name) {
            return Some(Arc::clone(p));
        }
        if reg.ports.len() >= MAX_TARGET_PORTS {
            return None;
        }
        // At most MAX_TARGET_PORTS groups exist, so an identifier is free.
        let id = (1..=u16::MAX).find(|&id| reg.group(id).is_none())?;
        let g = reg.add_group(PortGroup::new(id, AccessState::ActiveOptimized));
        reg.add_port(name, g)
    }

    /// Whether `rtpi` is the relative target port identifier of a known
    /// target port.
    pub fn has_port(&self, rtpi: u16) -> bool {
        self.lock().ports.iter().any(|p| p.rtpi == rtpi)
    }

    /// Relative target port 1, or [`DEFAULT_PORT`] if no port is known.
    pub(super) fn default_port(&self) -> Arc<TargetPort> {
        let mut reg = self.lock();
        if let Some(p) = reg.ports.first() {
            return Arc::clone(p);
        }
        // No port and so no group yet: group 1 and relative port 1.
        let group = reg.add_group(PortGroup::new(1, AccessState::ActiveOptimized));
        let p = Arc::new(TargetPort {
            rtpi: 1,
            name: DEFAULT_PORT.to_owned(),
            group,
        });
        reg.ports.push(Arc::clone(&p));
        p
    }

    /// Sets group `id`'s state; true if it changed.
    fn set_state(&self, id: u16, state: AccessState) -> Result<bool, AluaError> {
        let reg = self.lock();
        let g = reg.group(id).ok_or(AluaError::NoSuchGroup(id))?;
        let old = g.state.swap(state.code(), Ordering::AcqRel);
        if old != state.code() {
            g.status.store(STATUS_IMPLICIT, Ordering::Release);
        }
        Ok(old != state.code())
    }

    /// Every group with its ports, ascending.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let reg = self.lock();
        reg.groups
            .iter()
            .map(|g| GroupInfo {
                id: g.id,
                state: g.state().name(),
                ports: reg
                    .ports
                    .iter()
                    .filter(|p| p.group.id == g.id)
                    .map(|p| PortInfo {
                        relative_port: p.rtpi,
                        name: p.name.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// REPORT TARGET PORT GROUPS parameter data (SPC-4 6.37): the length
    /// only header (table 177) or, `extended`, the extended header (table
    /// 178, IMPLICIT TRANSITION TIME 0: unspecified); one descriptor per
    /// group (table 179: no preferred bit; T_SUP, U_SUP, S_SUP, AN_SUP,
    /// AO_SUP set, the states srptd offers) with its ports (table 182).
    pub fn report(&self, extended: bool) -> Vec<u8> {
        let reg = self.lock();
        let mut d = vec![0u8; 4];
        if extended {
            d.extend_from_slice(&[0x10, 0, 0, 0]); // FORMAT TYPE 001b
        }
        for g in &reg.groups {
            let ports = reg.ports.iter().filter(|p| p.group.id == g.id);
            let count = ports.clone().count().min(MAX_PORTS_PER_GROUP);
            d.push(g.state().code());
            d.push(0x80 | 0x08 | 0x04 | 0x02 | 0x01);
            d.extend_from_slice(&g.id.to_be_bytes());
            d.push(0);
            d.push(g.status.load(Ordering::Acquire));
            d.push(0);
            d.push(count as u8);
            for p in ports.take(count) {
                d.extend_from_slice(&[0, 0]);
                d.extend_from_slice(&p.rtpi.to_be_bytes());
            }
        }
        let n = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&n.to_be_bytes());
        d
    }
}

/// What an ALUA state change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateChange {
    pub group: u16,
    pub state: &'static str,
    /// False if the group was in that state already (nothing happened).
    pub changed: bool,
    /// I_T nexuses that got ASYMMETRIC ACCESS STATE CHANGED.
    pub nexuses_notified: usize,
}

impl Target {
    /// The target's ports and groups.
    pub fn alua(&self) -> &Alua {
        &self.alua
    }

    /// Puts group `group` in `state`. On a change, every I_T nexus (through
    /// every port: each one's view of the groups changed) gets a unit
    /// attention ASYMMETRIC ACCESS STATE CHANGED on each LUN it sees
    /// (SPC-4 5.16.2.2: implicit transitions), so multipath initiators ask
    /// REPORT TARGET PORT GROUPS again.
    pub fn set_alua_state(&self, group: u16, state: AccessState) -> Result<StateChange, AluaError> {
        let changed = self.alua.set_state(group, state)?;
        let mut nexuses_notified = 0;
        if changed {
            let t = self.table.load();
            for n in self.live_nexuses() {
                for lun in t.luns_for(n.initiator()) {
                    n.add_ua(lun, Sense::asymmetric_access_state_changed());
                }
                nexuses_notified += 1;
            }
        }
        Ok(StateChange {
            group,
            state: state.name(),
            changed,
            nexuses_notified,
        })
    }
}

impl Nexus {
    /// Refuses `cmd` if this nexus's target port's state does not allow it
    /// (one atomic load).
    pub(super) fn check_access(&self, cmd: &Cmd) -> Result<(), Sense> {
        match self.port().state().refusal(cmd) {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }
}
