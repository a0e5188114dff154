//! Reservations of one logical unit, sans I/O: SCSI-3 persistent
//! reservations (SPC-4 5.13, PERSISTENT RESERVE IN 6.15 and OUT 6.16) and
//! SPC-2 RESERVE/RELEASE (SPC-2 7.21, 7.11) with the SPC-4 5.13.3
//! exceptions.
//!
//! [`Reservations`] is plain state: commands go in, decisions come out
//! (allowed or RESERVATION CONFLICT, parameter data, unit attentions to
//! establish, I_T nexuses whose tasks to abort, whether the APTPL state
//! must be saved). A PERSISTENT RESERVE OUT computes the next state
//! without touching the current one, so the caller can save it (APTPL)
//! before committing it: a failed save changes nothing.
//!
//! A registration is of one I_T nexus, an initiator port through one
//! target port (SPC-4 5.13.7), or, made with ALL_TG_PT = 1, of the
//! initiator port through every target port, including ports that appear
//! later ([`RegistrantId`]).

use std::collections::BTreeMap;

use super::cdb::{be16, be32, be64, Cmd};
use super::lun::{InitiatorPortId, NexusId};
use super::sense::{Sense, SenseKey};

/// Whom a registration or reservation belongs to: an SRP initiator port
/// through one target port (an I_T nexus), or through every target port
/// (`port: None`, registered with ALL_TG_PT = 1; SPC-4 5.13.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrantId {
    pub initiator: InitiatorPortId,
    /// RELATIVE TARGET PORT IDENTIFIER; `None`: every target port.
    pub port: Option<u16>,
}

impl RegistrantId {
    /// The registrant of exactly I_T nexus `n`.
    pub fn nexus(n: &NexusId) -> RegistrantId {
        RegistrantId {
            initiator: n.initiator,
            port: Some(n.port),
        }
    }

    /// The registrant of `initiator` through every target port.
    pub fn all_ports(initiator: InitiatorPortId) -> RegistrantId {
        RegistrantId {
            initiator,
            port: None,
        }
    }

    /// Whether this registrant includes I_T nexus `n`.
    pub fn covers(&self, n: &NexusId) -> bool {
        self.initiator == n.initiator && self.port.map_or(true, |p| p == n.port)
    }

    /// Registered with ALL_TG_PT = 1.
    pub fn all_tg_pt(&self) -> bool {
        self.port.is_none()
    }

    /// Whether `self` and `other` would register a common I_T nexus: an
    /// I_T nexus is registered at most once (SPC-4 5.13.7), so they cannot
    /// both be registrations.
    pub fn overlaps(&self, other: &RegistrantId) -> bool {
        self.initiator == other.initiator
            && (self.port.is_none() || other.port.is_none() || self.port == other.port)
    }
}

/// Most registrations a logical unit keeps (beyond: INSUFFICIENT
/// REGISTRATION RESOURCES, SPC-4 5.13.7).
pub const MAX_REGISTRATIONS: usize = 128;

/// Largest PERSISTENT RESERVE OUT parameter list accepted: the basic list,
/// the TransportID length and a TransportID for every registration.
pub const MAX_PARAMETER_LIST: u32 = 28 + TRANSPORT_ID_LEN as u32 * MAX_REGISTRATIONS as u32;

/// Length of an SRP TransportID (SPC-4 7.6.4.6, table 508).
pub const TRANSPORT_ID_LEN: usize = 24;
/// PROTOCOL IDENTIFIER of SRP (SPC-4 7.6.1, table 500).
pub const PROTOCOL_SRP: u8 = 0x4;

/// Persistent reservation types (SPC-4 6.15.3.4, table 212).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationType(pub u8);

impl ReservationType {
    pub const WRITE_EXCLUSIVE: ReservationType = ReservationType(0x1);
    pub const EXCLUSIVE_ACCESS: ReservationType = ReservationType(0x3);
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: ReservationType = ReservationType(0x5);
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: ReservationType = ReservationType(0x6);
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: ReservationType = ReservationType(0x7);
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: ReservationType = ReservationType(0x8);

    /// The six types, in code order.
    pub const ALL: [ReservationType; 6] = [
        Self::WRITE_EXCLUSIVE,
        Self::EXCLUSIVE_ACCESS,
        Self::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
        Self::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
        Self::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
        Self::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
    ];

    /// Whether `code` is one of the six types.
    pub fn is_valid(self) -> bool {
        Self::ALL.contains(&self)
    }

    /// All registrants types: every registered I_T nexus is a reservation
    /// holder (SPC-4 5.13.10).
    pub fn all_registrants(self) -> bool {
        matches!(self.0, 0x7 | 0x8)
    }

    /// Registrants only or all registrants: registered I_T nexuses may
    /// access the medium (SPC-4 table 62 / SBC-3 table 13).
    pub fn registrants_allowed(self) -> bool {
        matches!(self.0, 0x5..=0x8)
    }

    /// Exclusive access types: reads conflict too.
    pub fn exclusive_access(self) -> bool {
        matches!(self.0, 0x3 | 0x6 | 0x8)
    }
}

/// SCOPE LU_SCOPE, the only scope (SPC-4 6.15.3.3, table 211).
pub const LU_SCOPE: u8 = 0x0;

/// How a command is treated in the presence of a reservation (SPC-4 5.13.1
/// table 62, SBC-3 4.17 table 13, SPC-2 5.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandClass {
    /// INQUIRY, REPORT LUNS, REQUEST SENSE, REPORT SUPPORTED OPERATION
    /// CODES: allowed under every reservation.
    Unrestricted,
    /// TEST UNIT READY, READ CAPACITY: allowed under persistent
    /// reservations, conflicting under an SPC-2 reservation.
    Status,
    /// Reads the medium or device state: READ, VERIFY, MODE SENSE.
    Read,
    /// Changes the medium or device state: WRITE, WRITE SAME, UNMAP,
    /// SYNCHRONIZE CACHE, MODE SELECT, START STOP UNIT.
    Write,
    /// PERSISTENT RESERVE IN / OUT.
    PersistentReserve,
    /// RESERVE(6)/(10).
    Reserve,
    /// RELEASE(6)/(10).
    Release,
}

/// Why a reservation command fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// RESERVATION CONFLICT status.
    Conflict,
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

impl From<Sense> for Refusal {
    fn from(s: Sense) -> Refusal {
        Refusal::Check(s)
    }
}

// ---------------------------------------------------------------- sense

/// UNIT ATTENTION, RESERVATIONS PREEMPTED (2Ah/03h).
pub const fn reservations_preempted() -> Sense {
    Sense::new(SenseKey::UnitAttention, 0x2a, 0x03)
}
/// UNIT ATTENTION, RESERVATIONS RELEASED (2Ah/04h).
pub const fn reservations_released() -> Sense {
    Sense::new(SenseKey::UnitAttention, 0x2a, 0x04)
}
/// UNIT ATTENTION, REGISTRATIONS PREEMPTED (2Ah/05h).
pub const fn registrations_preempted() -> Sense {
    Sense::new(SenseKey::UnitAttention, 0x2a, 0x05)
}
/// UNIT ATTENTION, COMMANDS CLEARED BY ANOTHER INITIATOR (2Fh/00h), for an
/// I_T nexus whose tasks another one aborted (SAM-5 5.6, TAS = 0).
pub const fn commands_cleared_by_another_initiator() -> Sense {
    Sense::new(SenseKey::UnitAttention, 0x2f, 0x00)
}
/// ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION (26h/04h).
pub const fn invalid_release() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x26, 0x04)
}
/// ILLEGAL REQUEST, INSUFFICIENT REGISTRATION RESOURCES (55h/04h): too many
/// registrations, or the APTPL state could not be saved.
pub const fn insufficient_registration_resources() -> Sense {
    Sense::new(SenseKey::IllegalRequest, 0x55, 0x04)
}

fn bad_param(byte: u16, bit: Option<u8>) -> Refusal {
    Refusal::Check(Sense::invalid_field_in_parameter_list_at(byte, bit))
}

fn list_length_error() -> Refusal {
    Refusal::Check(Sense::parameter_list_length_error())
}

// ---------------------------------------------------------------- CDBs

/// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1, table 205).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrInAction {
    ReadKeys,
    ReadReservation,
    ReportCapabilities,
    ReadFullStatus,
}

/// A PERSISTENT RESERVE IN CDB (SPC-4 6.15.1, table 204).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrInCdb {
    pub action: PrInAction,
    /// ALLOCATION LENGTH (bytes 7-8).
    pub alloc: u32,
}

impl PrInCdb {
    /// Decodes the fields of a CDB whose length and reserved bits
    /// [`cdb::check`](super::cdb::check) already accepted.
    pub fn parse(b: &[u8]) -> Result<PrInCdb, Sense> {
        if b.len() < 10 {
            return Err(Sense::invalid_field_in_cdb_at(b.len() as u16, None));
        }
        let action = match b[1] & 0x1f {
            0 => PrInAction::ReadKeys,
            1 => PrInAction::ReadReservation,
            2 => PrInAction::ReportCapabilities,
            3 => PrInAction::ReadFullStatus,
            _ => return Err(Sense::invalid_field_in_cdb_at(1, Some(4))),
        };
        Ok(PrInCdb {
            action,
            alloc: u32::from(be16(&b[7..])),
        })
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2, table 214).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrOutAction {
    Register,
    Reserve,
    Release,
    Clear,
    Preempt,
    PreemptAndAbort,
    RegisterAndIgnoreExistingKey,
    RegisterAndMove,
}

/// A PERSISTENT RESERVE OUT CDB (SPC-4 6.16.1, table 213).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrOutCdb {
    pub action: PrOutAction,
    /// SCOPE (byte 2, bits 7:4).
    pub scope: u8,
    /// TYPE (byte 2, bits 3:0).
    pub rtype: ReservationType,
    /// PARAMETER LIST LENGTH (bytes 5-8).
    pub len: u32,
}

impl PrOutCdb {
    /// Decodes the fields of a checked CDB. SCOPE and TYPE are checked
    /// where the service action uses them.
    pub fn parse(b: &[u8]) -> Result<PrOutCdb, Sense> {
        if b.len() < 10 {
            return Err(Sense::invalid_field_in_cdb_at(b.len() as u16, None));
        }
        let action = match b[1] & 0x1f {
            0 => PrOutAction::Register,
            1 => PrOutAction::Reserve,
            2 => PrOutAction::Release,
            3 => PrOutAction::Clear,
            4 => PrOutAction::Preempt,
            5 => PrOutAction::PreemptAndAbort,
            6 => PrOutAction::RegisterAndIgnoreExistingKey,
            7 => PrOutAction::RegisterAndMove,
            _ => return Err(Sense::invalid_field_in_cdb_at(1, Some(4))),
        };
        Ok(PrOutCdb {
            action,
            scope: b[2] >> 4,
            rtype: ReservationType(b[2] & 0x0f),
            len: be32(&b[5..]),
        })
    }

    /// Checks the PARAMETER LIST LENGTH before any data moves (SPC-4
    /// 6.16.3: a list shorter than 24 bytes, or 24 bytes plus anything
    /// but TransportIDs, is a PARAMETER LIST LENGTH ERROR).
    pub fn check_length(&self) -> Result<(), Sense> {
        if self.len < 24 || self.len > MAX_PARAMETER_LIST {
            return Err(Sense::parameter_list_length_error());
        }
        Ok(())
    }

    /// SCOPE LU_SCOPE and a valid TYPE, else INVALID FIELD IN CDB (SPC-4
    /// 6.16.1).
    fn check_scope_type(&self) -> Result<(), Sense> {
        if self.scope != LU_SCOPE {
            return Err(Sense::invalid_field_in_cdb_at(2, Some(7)));
        }
        if !self.rtype.is_valid() {
            return Err(Sense::invalid_field_in_cdb_at(2, Some(3)));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- parameter lists

/// Parses an SRP TransportID (SPC-4 7.6.4.6, table 508): FORMAT CODE 00b,
/// PROTOCOL IDENTIFIER 4h, bytes 1-7 reserved, the 16-byte initiator port
/// identifier. `at` is its offset in the parameter list (for the field
/// pointer). Any other protocol or format is INVALID FIELD IN PARAMETER
/// LIST (SPC-4 6.16.3): srptd only has SRP initiator ports.
pub fn parse_transport_id(b: &[u8], at: usize) -> Result<InitiatorPortId, Refusal> {
    if b.len() < TRANSPORT_ID_LEN {
        return Err(list_length_error());
    }
    if b[0] & 0xc0 != 0 {
        return Err(bad_param(at as u16, Some(7)));
    }
    if b[0] & 0x0f != PROTOCOL_SRP || b[0] & 0x30 != 0 {
        return Err(bad_param(at as u16, Some(3)));
    }
    if let Some(i) = (1..8).find(|&i| b[i] != 0) {
        return Err(bad_param((at + i) as u16, None));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[8..24]);
    Ok(id)
}

/// Emits the SRP TransportID of `id`.
pub fn transport_id(id: &InitiatorPortId) -> [u8; TRANSPORT_ID_LEN] {
    let mut t = [0u8; TRANSPORT_ID_LEN];
    t[0] = PROTOCOL_SRP;
    t[8..].copy_from_slice(id);
    t
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.3, table
/// 215), for every service action but REGISTER AND MOVE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrOutParams {
    /// RESERVATION KEY (bytes 0-7).
    pub key: u64,
    /// SERVICE ACTION RESERVATION KEY (bytes 8-15).
    pub sa_key: u64,
    /// SPEC_I_PT (byte 20, bit 3).
    pub spec_i_pt: bool,
    /// ALL_TG_PT (byte 20, bit 2).
    pub all_tg_pt: bool,
    /// APTPL (byte 20, bit 0).
    pub aptpl: bool,
    /// The initiator ports of the TransportIDs (SPEC_I_PT = 1).
    pub transport_ids: Vec<InitiatorPortId>,
}

impl PrOutParams {
    /// Parses the list of a PERSISTENT RESERVE OUT with service action
    /// `action`. `p` is exactly PARAMETER LIST LENGTH bytes.
    pub fn parse(p: &[u8], action: PrOutAction) -> Result<PrOutParams, Refusal> {
        if p.len() < 24 {
            return Err(list_length_error());
        }
        let flags = p[20];
        // Byte 20 bits 7:4 and 1, byte 21: reserved (SPC-4 table 215).
        if flags & 0xf2 != 0 {
            let bit = 7 - (flags & 0xf2).leading_zeros() as u8;
            return Err(bad_param(20, Some(bit)));
        }
        if p[21] != 0 {
            return Err(bad_param(21, None));
        }
        let spec_i_pt = flags & 0x08 != 0;
        let mut transport_ids = Vec::new();
        if spec_i_pt {
            // SPC-4 6.16.3: SPEC_I_PT is only valid with REGISTER.
            if action != PrOutAction::Register {
                return Err(bad_param(20, Some(3)));
            }
            if p.len() < 28 {
                return Err(list_length_error());
            }
            let tid_len = be32(&p[24..]) as usize;
            // The TransportIDs fill the rest of the list exactly.
            if p.len() - 28 != tid_len {
                return Err(list_length_error());
            }
            let mut at = 28;
            while at < p.len() {
                let id = parse_transport_id(&p[at..], at)?;
                if transport_ids.contains(&id) {
                    return Err(bad_param(at as u16, None));
                }
                transport_ids.push(id);
                at += TRANSPORT_ID_LEN;
            }
        } else if p.len() != 24 {
            return Err(list_length_error());
        }
        Ok(PrOutParams {
            key: be64(&p[0..]),
            sa_key: be64(&p[8..]),
            spec_i_pt,
            all_tg_pt: flags & 0x04 != 0,
            aptpl: flags & 0x01 != 0,
            transport_ids,
        })
    }
}

/// The REGISTER AND MOVE parameter list (SPC-4 6.16.4, table 217).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterAndMoveParams {
    pub key: u64,
    pub sa_key: u64,
    /// UNREG (byte 17, bit 1).
    pub unreg: bool,
    /// APTPL (byte 17, bit 0).
    pub aptpl: bool,
    /// RELATIVE TARGET PORT IDENTIFIER (bytes 18-19).
    pub relative_target_port: u16,
    /// The destination initiator port.
    pub transport_id: InitiatorPortId,
}

impl RegisterAndMoveParams {
    /// Parses the list; `p` is exactly PARAMETER LIST LENGTH bytes.
    pub fn parse(p: &[u8]) -> Result<RegisterAndMoveParams, Refusal> {
        if p.len() < 24 {
            return Err(list_length_error());
        }
        if p[16] != 0 {
            return Err(bad_param(16, None));
        }
        if p[17] & 0xfc != 0 {
            let bit = 7 - (p[17] & 0xfc).leading_zeros() as u8;
            return Err(bad_param(17, Some(bit)));
        }
        let tid_len = be32(&p[20..]) as usize;
        if p.len() - 24 != tid_len {
            return Err(list_length_error());
        }
        if tid_len != TRANSPORT_ID_LEN {
            // Not one SRP TransportID: what the list holds is not one we
            // can use (if it is a longer TransportID of another protocol,
            // the protocol identifier says so first).
            if tid_len > 0 {
                parse_transport_id(&p[24..], 24)?;
            }
            return Err(bad_param(20, None));
        }
        Ok(RegisterAndMoveParams {
            key: be64(&p[0..]),
            sa_key: be64(&p[8..]),
            unreg: p[17] & 0x02 != 0,
            aptpl: p[17] & 0x01 != 0,
            relative_target_port: be16(&p[18..]),
            transport_id: parse_transport_id(&p[24..], 24)?,
        })
    }
}

// ---------------------------------------------------------------- state

/// One registration (SPC-4 5.13.7); whose it is, and so ALL_TG_PT, is its
/// [`RegistrantId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    pub key: u64,
}

/// The persistent reservation (SPC-4 5.13.9). For all registrants types
/// `holder` is the I_T nexus that established it; every registrant holds
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub holder: RegistrantId,
    pub rtype: ReservationType,
}

/// Whether the APTPL state must change after a PERSISTENT RESERVE OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Nothing saved changed.
    Unchanged,
    /// Save the new state (APTPL is in effect).
    Save,
    /// APTPL was turned off: remove the saved state.
    Remove,
}

/// What the caller must do after a PERSISTENT RESERVE OUT succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects {
    /// Unit attentions to establish for the I_T nexuses of these
    /// registrants on this LUN.
    pub unit_attentions: Vec<(RegistrantId, Sense)>,
    /// Registrants whose I_T nexuses' tasks on this LUN are aborted
    /// (PREEMPT AND ABORT, SPC-4 5.13.11.2.3).
    pub aborts: Vec<RegistrantId>,
    /// Save (or remove) the state before reporting GOOD.
    pub persist: Persist,
}

/// The reservation state of one logical unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    /// PRGENERATION (SPC-4 6.15.2).
    pub generation: u32,
    pub registrations: BTreeMap<RegistrantId, Registration>,
    pub reservation: Option<Reservation>,
    /// Activate persist through power loss (SPC-4 5.13.5), set by the last
    /// successful REGISTER, REGISTER AND IGNORE EXISTING KEY or REGISTER
    /// AND MOVE.
    pub aptpl: bool,
    /// The SPC-2 RESERVE holder; never saved (SPC-2 5.5.1: released on
    /// I_T nexus loss, LUN reset and power loss).
    pub scsi2_holder: Option<NexusId>,
}

/// What the device server supports, for REPORT CAPABILITIES and APTPL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// PTPL_C: a state directory is configured.
    pub ptpl: bool,
}

impl Reservations {
    /// Whether any reservation (persistent or SPC-2) is held: without one,
    /// no command conflicts.
    pub fn restricts(&self) -> bool {
        self.reservation.is_some() || self.scsi2_holder.is_some()
    }

    /// The registration that I_T nexus `n` is registered by: its own, or
    /// its initiator port's ALL_TG_PT one.
    pub fn registrant(&self, n: &NexusId) -> Option<RegistrantId> {
        [RegistrantId::nexus(n), RegistrantId::all_ports(n.initiator)]
            .into_iter()
            .find(|r| self.registrations.contains_key(r))
    }

    /// Whether I_T nexus `n` is registered.
    pub fn is_registered(&self, n: &NexusId) -> bool {
        self.registrant(n).is_some()
    }

    /// Whether I_T nexus `n` is a persistent reservation holder (SPC-4
    /// 5.13.10).
    pub fn is_holder(&self, n: &NexusId) -> bool {
        self.registrant(n).is_some_and(|g| self.holds(&g))
    }

    /// Whether registrant `g` (registered) holds the reservation.
    fn holds(&self, g: &RegistrantId) -> bool {
        match self.reservation {
            None => false,
            Some(r) if r.rtype.all_registrants() => self.registrations.contains_key(g),
            Some(r) => r.holder == *g,
        }
    }

    /// Whether a command of `class` from `n` may run, or meets a
    /// RESERVATION CONFLICT (SPC-4 5.13.1 table 62, SBC-3 4.17.1 table 13;
    /// SPC-2 5.5.1 and SPC-4 5.13.3 for SPC-2 reservations).
    pub fn allows(&self, n: &NexusId, class: CommandClass) -> bool {
        if let Some(h) = self.scsi2_holder {
            // SPC-4 5.13.3: while an SPC-2 reservation is held, PERSISTENT
            // RESERVE IN and OUT conflict regardless of the I_T nexus.
            if class == CommandClass::PersistentReserve {
                return false;
            }
            if h != *n {
                // SPC-2 5.5.1: another nexus's reservation leaves it only
                // the commands that do not touch the logical unit, and
                // RELEASE (which then does nothing).
                return matches!(class, CommandClass::Unrestricted | CommandClass::Release);
            }
            return true;
        }
        let Some(r) = self.reservation else {
            return true;
        };
        if self.is_holder(n) {
            return true;
        }
        match class {
            // Table 62: allowed for every type; RESERVE and RELEASE are
            // decided by SPC-4 5.13.3 when they run.
            CommandClass::Unrestricted
            | CommandClass::Status
            | CommandClass::PersistentReserve
            | CommandClass::Reserve
            | CommandClass::Release => true,
            // Table 13: reads conflict only under Exclusive Access types,
            // and there only for I_T nexuses that are not registered.
            CommandClass::Read => {
                !r.rtype.exclusive_access() || (r.rtype.registrants_allowed() && self.is_registered(n))
            }
            // Writes conflict under Write Exclusive and Exclusive Access;
            // the registrants types let registered nexuses write.
            CommandClass::Write => r.rtype.registrants_allowed() && self.is_registered(n),
        }
    }

    // ------------------------------------------------------------ SPC-2

    /// RESERVE(6)/(10) from `n` (SPC-2 7.21; SPC-4 5.13.3 with CRH = 1).
    pub fn reserve_scsi2(&mut self, n: &NexusId) -> Result<(), Refusal> {
        if self.scsi2_holder.is_some_and(|h| h != *n) {
            return Err(Refusal::Conflict);
        }
        if !self.registrations.is_empty() || self.reservation.is_some() {
            // SPC-4 5.13.3: a persistent reservation holder's RESERVE
            // completes with GOOD and changes nothing (CRH = 1); any other
            // RESERVE while registrations exist conflicts.
            return if self.is_holder(n) {
                Ok(())
            } else {
                Err(Refusal::Conflict)
            };
        }
        self.scsi2_holder = Some(*n);
        Ok(())
    }

    /// RELEASE(6)/(10) from `n` (SPC-2 7.11): releases `n`'s own SPC-2
    /// reservation; from anyone else, or while registrations exist (SPC-4
    /// 5.13.3), GOOD and nothing changes.
    pub fn release_scsi2(&mut self, n: &NexusId) {
        if self.scsi2_holder == Some(*n) {
            self.scsi2_holder = None;
        }
    }

    /// The I_T nexus `n` is gone: its SPC-2 reservation ends (SPC-2
    /// 5.5.1); registrations persist (SPC-4 5.13.1).
    pub fn nexus_lost(&mut self, n: &NexusId) {
        self.release_scsi2(n);
    }

    /// LOGICAL UNIT RESET: the SPC-2 reservation ends; persistent
    /// reservations are not affected (SPC-4 5.13.1).
    pub fn lun_reset(&mut self) {
        self.scsi2_holder = None;
    }

    // ------------------------------------------------------------ PR IN

    /// PERSISTENT RESERVE IN parameter data (SPC-4 6.15), untruncated.
    pub fn persistent_reserve_in(&self, action: PrInAction, caps: Capabilities) -> Vec<u8> {
        let mut d = Vec::new();
        match action {
            // SPC-4 6.15.2, table 206.
            PrInAction::ReadKeys => {
                d.extend_from_slice(&self.generation.to_be_bytes());
                d.extend_from_slice(&((self.registrations.len() * 8) as u32).to_be_bytes());
                for r in self.registrations.values() {
                    d.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            // SPC-4 6.15.3, tables 207 and 208.
            PrInAction::ReadReservation => {
                d.extend_from_slice(&self.generation.to_be_bytes());
                match self.reservation {
                    None => d.extend_from_slice(&0u32.to_be_bytes()),
                    Some(r) => {
                        d.extend_from_slice(&16u32.to_be_bytes());
                        // All registrants types report key zero (6.15.3.2).
                        let key = if r.rtype.all_registrants() {
                            0
                        } else {
                            self.registrations.get(&r.holder).map_or(0, |g| g.key)
                        };
                        d.extend_from_slice(&key.to_be_bytes());
                        d.extend_from_slice(&[0; 5]);
                        d.push(LU_SCOPE << 4 | r.rtype.0);
                        d.extend_from_slice(&[0; 2]);
                    }
                }
            }
            // SPC-4 6.15.4, table 209.
            PrInAction::ReportCapabilities => {
                d.extend_from_slice(&8u16.to_be_bytes());
                // CRH (bit 4), SIP_C (3), ATP_C (2), PTPL_C (0).
                d.push(0x10 | 0x08 | 0x04 | u8::from(caps.ptpl));
                // TMV (bit 7), ALLOW COMMANDS 000b, PTPL_A (0).
                d.push(0x80 | u8::from(self.aptpl));
                // PERSISTENT RESERVATION TYPE MASK (table 210): WR_EX_AR,
                // EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
                d.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
                d.push(0x01);
                d.extend_from_slice(&[0; 2]);
            }
            // SPC-4 6.15.5, tables 211 and 212.
            PrInAction::ReadFullStatus => {
                d.extend_from_slice(&self.generation.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                for (g, r) in &self.registrations {
                    d.extend_from_slice(&r.key.to_be_bytes());
                    d.extend_from_slice(&[0; 4]);
                    let holder = self.holds(g);
                    d.push(u8::from(g.all_tg_pt()) << 1 | u8::from(holder));
                    d.push(match (holder, self.reservation) {
                        (true, Some(res)) => LU_SCOPE << 4 | res.rtype.0,
                        _ => 0,
                    });
                    d.extend_from_slice(&[0; 4]);
                    // With ALL_TG_PT = 1 the RELATIVE TARGET PORT
                    // IDENTIFIER is not defined (SPC-4 6.15.5): zero.
                    d.extend_from_slice(&g.port.unwrap_or(0).to_be_bytes());
                    d.extend_from_slice(&(TRANSPORT_ID_LEN as u32).to_be_bytes());
                    d.extend_from_slice(&transport_id(&g.initiator));
                }
                let n = (d.len() - 8) as u32;
                d[4..8].copy_from_slice(&n.to_be_bytes());
            }
        }
        d
    }

    // ------------------------------------------------------------ PR OUT

    /// PERSISTENT RESERVE OUT from I_T nexus `from` with parameter list
    /// `p` (exactly PARAMETER LIST LENGTH bytes). `allowed` says whether an
    /// initiator port named by a TransportID may use this logical unit,
    /// `port_exists` whether a relative target port identifier names one
    /// of the target's ports. Returns the next state and what to do about
    /// it; `self` is not changed.
    pub fn persistent_reserve_out(
        &self,
        from: &NexusId,
        cdb: &PrOutCdb,
        p: &[u8],
        caps: Capabilities,
        allowed: &dyn Fn(&InitiatorPortId) -> bool,
        port_exists: &dyn Fn(u16) -> bool,
    ) -> Result<(Reservations, Effects), Refusal> {
        // SPC-4 5.13.3: conflicts with an SPC-2 reservation, whoever holds it.
        if self.scsi2_holder.is_some() {
            return Err(Refusal::Conflict);
        }
        if p.len() as u64 != u64::from(cdb.len) {
            return Err(list_length_error());
        }
        let mut next = self.clone();
        let mut fx = Effects {
            unit_attentions: Vec::new(),
            aborts: Vec::new(),
            persist: Persist::Unchanged,
        };
        if cdb.action == PrOutAction::RegisterAndMove {
            let m = RegisterAndMoveParams::parse(p)?;
            if m.aptpl && !caps.ptpl {
                return Err(bad_param(17, Some(0)));
            }
            next.register_and_move(from, &m, allowed, port_exists)?;
        } else {
            let params = PrOutParams::parse(p, cdb.action)?;
            let registering = matches!(
                cdb.action,
                PrOutAction::Register | PrOutAction::RegisterAndIgnoreExistingKey
            );
            // SPC-4 6.16.3: APTPL without PTPL_C is INVALID FIELD IN
            // PARAMETER LIST; it is ignored by the other service actions.
            if registering && params.aptpl && !caps.ptpl {
                return Err(bad_param(20, Some(0)));
            }
            match cdb.action {
                PrOutAction::Register | PrOutAction::RegisterAndIgnoreExistingKey => next.register(
                    from,
                    &params,
                    cdb.action == PrOutAction::Register,
                    allowed,
                    &mut fx,
                )?,
                PrOutAction::Reserve => next.reserve(from, cdb, &params)?,
                PrOutAction::Release => next.release(from, cdb, &params, &mut fx)?,
                PrOutAction::Clear => next.clear(from, &params, &mut fx)?,
                PrOutAction::Preempt | PrOutAction::PreemptAndAbort => {
                    let abort = cdb.action == PrOutAction::PreemptAndAbort;
                    next.preempt(from, cdb, &params, abort, &mut fx)?
                }
                PrOutAction::RegisterAndMove => unreachable!("handled above"),
            }
        }
        // SPC-4 6.15.2: PRGENERATION counts every successful PERSISTENT
        // RESERVE OUT except RESERVE and RELEASE.
        if !matches!(cdb.action, PrOutAction::Reserve | PrOutAction::Release) {
            next.generation = next.generation.wrapping_add(1);
        }
        fx.persist = if next.aptpl && next.saved() != self.saved() {
            Persist::Save
        } else if !next.aptpl && self.aptpl {
            Persist::Remove
        } else {
            Persist::Unchanged
        };
        Ok((next, fx))
    }

    /// The part of the state that APTPL saves.
    fn saved(
        &self,
    ) -> (
        u32,
        &BTreeMap<RegistrantId, Registration>,
        Option<Reservation>,
        bool,
    ) {
        (self.generation, &self.registrations, self.reservation, self.aptpl)
    }

    /// SPC-4 5.13.7 (and 6.16.2 table 216): a registered nexus's
    /// RESERVATION KEY must match its key; an unregistered one may only
    /// register.
    fn check_key(&self, from: &NexusId, key: u64) -> Result<RegistrantId, Refusal> {
        let g = self.registrant(from).ok_or(Refusal::Conflict)?;
        match self.registrations.get(&g) {
            Some(r) if r.key == key => Ok(g),
            _ => Err(Refusal::Conflict),
        }
    }

    /// REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.13.7, 5.13.11.3).
    fn register(
        &mut self,
        from: &NexusId,
        p: &PrOutParams,
        check_key: bool,
        allowed: &dyn Fn(&InitiatorPortId) -> bool,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let Some(g) = self.registrant(from) else {
            // Unregistered: RESERVATION KEY must be zero (REGISTER).
            if check_key && p.key != 0 {
                return Err(Refusal::Conflict);
            }
            if p.sa_key == 0 {
                // Nothing to register (SPC-4 5.13.7): GOOD.
                self.aptpl = p.aptpl;
                return Ok(());
            }
            // ALL_TG_PT = 1 registers the initiator port through every
            // target port, ALL_TG_PT = 0 only the I_T nexus (SPC-4 6.16.3);
            // the TransportIDs of SPEC_I_PT are registered the same way.
            let of = |initiator: InitiatorPortId| RegistrantId {
                initiator,
                port: (!p.all_tg_pt).then_some(from.port),
            };
            // An initiator port already registered through another target
            // port cannot also be registered through all of them.
            let taken = |s: &Self, g: &RegistrantId| s.registrations.keys().any(|h| h.overlaps(g));
            let me = of(from.initiator);
            if taken(self, &me) {
                return Err(bad_param(20, Some(2)));
            }
            let mut new = vec![me];
            for (i, id) in p.transport_ids.iter().enumerate() {
                let at = (28 + i * TRANSPORT_ID_LEN) as u16;
                if *id == from.initiator {
                    continue;
                }
                // SPC-4 6.16.3: a TransportID naming a registered or
                // unknown I_T nexus is INVALID FIELD IN PARAMETER LIST.
                let g = of(*id);
                if taken(self, &g) || !allowed(id) {
                    return Err(bad_param(at, None));
                }
                new.push(g);
            }
            if self.registrations.len() + new.len() > MAX_REGISTRATIONS {
                return Err(Refusal::Check(insufficient_registration_resources()));
            }
            for g in new {
                self.registrations.insert(g, Registration { key: p.sa_key });
            }
            self.aptpl = p.aptpl;
            return Ok(());
        };
        let key = self.registrations[&g].key;
        if check_key && p.key != key {
            return Err(Refusal::Conflict);
        }
        // SPC-4 6.16.3: SPEC_I_PT from a registered nexus.
        if p.spec_i_pt {
            return Err(bad_param(20, Some(3)));
        }
        // A registered I_T nexus changes or removes the registration it is
        // registered by, an ALL_TG_PT one included (ALL_TG_PT is ignored).
        if p.sa_key == 0 {
            self.unregister(&g, fx);
        } else {
            self.registrations.insert(g, Registration { key: p.sa_key });
        }
        self.aptpl = p.aptpl;
        Ok(())
    }

    /// Removes registration `g`; a holder's reservation goes with it
    /// (SPC-4 5.13.11.3): for registrants only types the other registrants
    /// learn RESERVATIONS RELEASED; an all registrants reservation ends
    /// with its last registrant.
    fn unregister(&mut self, g: &RegistrantId, fx: &mut Effects) {
        let holder = self.holds(g);
        self.registrations.remove(g);
        let Some(r) = self.reservation else { return };
        if r.rtype.all_registrants() {
            if self.registrations.is_empty() {
                self.reservation = None;
            }
        } else if holder {
            self.reservation = None;
            if r.rtype.registrants_allowed() {
                for other in self.registrations.keys() {
                    fx.unit_attentions.push((*other, reservations_released()));
                }
            }
        }
    }

    /// RESERVE (SPC-4 5.13.9).
    fn reserve(&mut self, from: &NexusId, cdb: &PrOutCdb, p: &PrOutParams) -> Result<(), Refusal> {
        let g = self.check_key(from, p.key)?;
        cdb.check_scope_type()?;
        match self.reservation {
            None => {
                self.reservation = Some(Reservation {
                    holder: g,
                    rtype: cdb.rtype,
                });
                Ok(())
            }
            // The holder reserving again with the same type: GOOD, no change.
            Some(r) if self.holds(&g) && r.rtype == cdb.rtype => Ok(()),
            Some(_) => Err(Refusal::Conflict),
        }
    }

    /// RELEASE (SPC-4 5.13.11.2).
    fn release(
        &mut self,
        from: &NexusId,
        cdb: &PrOutCdb,
        p: &PrOutParams,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let g = self.check_key(from, p.key)?;
        let Some(r) = self.reservation else {
            return Ok(());
        };
        if !self.holds(&g) {
            return Ok(());
        }
        if cdb.scope != LU_SCOPE || cdb.rtype != r.rtype {
            return Err(Refusal::Check(invalid_release()));
        }
        self.reservation = None;
        // Registrants only and all registrants: the other registrants are
        // told RESERVATIONS RELEASED.
        if r.rtype.registrants_allowed() {
            for other in self.registrations.keys().filter(|k| **k != g) {
                fx.unit_attentions.push((*other, reservations_released()));
            }
        }
        Ok(())
    }

    /// CLEAR (SPC-4 5.13.11.6): every registration and the
    /// reservation go; the others learn RESERVATIONS PREEMPTED.
    fn clear(&mut self, from: &NexusId, p: &PrOutParams, fx: &mut Effects) -> Result<(), Refusal> {
        let g = self.check_key(from, p.key)?;
        for other in self.registrations.keys().filter(|k| **k != g) {
            fx.unit_attentions.push((*other, reservations_preempted()));
        }
        self.registrations.clear();
        self.reservation = None;
        Ok(())
    }

    /// PREEMPT / PREEMPT AND ABORT (SPC-4 5.13.11.4, 5.13.11.5).
    fn preempt(
        &mut self,
        from: &NexusId,
        cdb: &PrOutCdb,
        p: &PrOutParams,
        abort: bool,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let me = self.check_key(from, p.key)?;
        let victims = |s: &Self, key: u64| -> Vec<RegistrantId> {
            s.registrations
                .iter()
                .filter(|(g, r)| r.key == key && **g != me)
                .map(|(g, _)| *g)
                .collect()
        };
        let matched = |s: &Self, key: u64| s.registrations.values().any(|r| r.key == key);
        let removed = match self.reservation {
            // An all registrants reservation with SARK zero: every other
            // registration goes and `from` takes a new reservation (5.13.11.4.4).
            Some(r) if r.rtype.all_registrants() && p.sa_key == 0 => {
                cdb.check_scope_type()?;
                self.reservation = Some(Reservation {
                    holder: me,
                    rtype: cdb.rtype,
                });
                self.registrations.keys().filter(|k| **k != me).copied().collect()
            }
            // The holder's key: its reservation is preempted and `from`
            // holds the new one (5.13.11.4.3).
            Some(r)
                if !r.rtype.all_registrants()
                    && self
                        .registrations
                        .get(&r.holder)
                        .is_some_and(|h| h.key == p.sa_key) =>
            {
                cdb.check_scope_type()?;
                let removed = victims(self, p.sa_key);
                let changed = r.rtype != cdb.rtype;
                self.reservation = Some(Reservation {
                    holder: me,
                    rtype: cdb.rtype,
                });
                if changed {
                    // The registrations that stay learn RESERVATIONS RELEASED
                    // when the type changed.
                    for other in self.registrations.keys() {
                        if *other != me && !removed.contains(other) {
                            fx.unit_attentions.push((*other, reservations_released()));
                        }
                    }
                }
                removed
            }
            // No reservation, or a key that does not hold it: only
            // registrations are preempted (5.13.11.4.2); SARK zero is
            // INVALID FIELD IN PARAMETER LIST there.
            _ => {
                if p.sa_key == 0 {
                    return Err(bad_param(8, None));
                }
                if !matched(self, p.sa_key) {
                    return Err(Refusal::Conflict);
                }
                victims(self, p.sa_key)
            }
        };
        for g in &removed {
            self.registrations.remove(g);
            fx.unit_attentions.push((*g, registrations_preempted()));
        }
        // An all registrants reservation whose registrants are all gone.
        if self.reservation.is_some_and(|r| r.rtype.all_registrants()) && self.registrations.is_empty() {
            self.reservation = None;
        }
        if abort {
            // SPC-4 5.13.11.5: the tasks of every preempted I_T nexus are
            // aborted as by ABORT TASK SET, with the unit attention SAM-5
            // 5.6 requires when TAS = 0.
            for g in &removed {
                fx.aborts.push(*g);
                fx.unit_attentions
                    .push((*g, commands_cleared_by_another_initiator()));
            }
        }
        Ok(())
    }

    /// REGISTER AND MOVE (SPC-4 5.13.8): the reservation moves to the I_T
    /// nexus of the TransportID's initiator port through the RELATIVE
    /// TARGET PORT IDENTIFIER's target port.
    fn register_and_move(
        &mut self,
        from: &NexusId,
        m: &RegisterAndMoveParams,
        allowed: &dyn Fn(&InitiatorPortId) -> bool,
        port_exists: &dyn Fn(u16) -> bool,
    ) -> Result<(), Refusal> {
        let me = self.check_key(from, m.key)?;
        // Only the holder of a reservation that is not all registrants may
        // move it; anyone else meets a conflict (SPC-4 5.13.8).
        let Some(r) = self.reservation else {
            return Err(Refusal::Conflict);
        };
        if r.rtype.all_registrants() || r.holder != me {
            return Err(Refusal::Conflict);
        }
        if m.sa_key == 0 {
            return Err(bad_param(8, None));
        }
        if !port_exists(m.relative_target_port) {
            return Err(bad_param(18, None));
        }
        let dest_nexus = NexusId {
            initiator: m.transport_id,
            port: m.relative_target_port,
        };
        // The destination is registered by its own registration (which
        // takes the new key) or gets one for that I_T nexus.
        let dest = self
            .registrant(&dest_nexus)
            .unwrap_or(RegistrantId::nexus(&dest_nexus));
        // SPC-4 5.13.8: the I_T nexus that sent the command (or one sharing
        // its registration) is not a destination.
        if dest == me || !allowed(&dest.initiator) {
            return Err(bad_param(24, None));
        }
        if !self.registrations.contains_key(&dest) && self.registrations.len() >= MAX_REGISTRATIONS {
            return Err(Refusal::Check(insufficient_registration_resources()));
        }
        self.registrations.insert(dest, Registration { key: m.sa_key });
        self.reservation = Some(Reservation {
            holder: dest,
            rtype: r.rtype,
        });
        if m.unreg {
            self.registrations.remove(&me);
        }
        self.aptpl = m.aptpl;
        Ok(())
    }
}

/// How `cmd` fares under a reservation (SPC-4 table 62, SBC-3 table 13).
pub fn reservation_class(cmd: &Cmd) -> CommandClass {
    match cmd {
        Cmd::Inquiry { .. }
        | Cmd::ReportLuns { .. }
        | Cmd::RequestSense { .. }
        | Cmd::ReportOpcodes { .. }
        | Cmd::ReportTargetPortGroups { .. } => CommandClass::Unrestricted,
        Cmd::TestUnitReady | Cmd::ReadCapacity10 | Cmd::ReadCapacity16 { .. } => CommandClass::Status,
        Cmd::Read { .. } | Cmd::Verify { .. } | Cmd::ModeSense { .. } => CommandClass::Read,
        // START STOP UNIT is treated as the conflicting form (SBC-3 table
        // 13 allows only START = 1 with POWER CONDITION 0h).
        Cmd::Write { .. }
        | Cmd::WriteAndVerify { .. }
        | Cmd::CompareAndWrite { .. }
        | Cmd::WriteSame { .. }
        | Cmd::Unmap { .. }
        | Cmd::SyncCache { .. }
        | Cmd::ModeSelect { .. }
        | Cmd::StartStopUnit => CommandClass::Write,
        // SPC-4 5.13.1 table 62: EXTENDED COPY and RECEIVE COPY RESULTS
        // conflict under Write Exclusive and Exclusive Access, as writes
        // do. The copy's source and destination LUNs are checked too, as a
        // READ and a WRITE from the same initiator (xcopy.rs).
        Cmd::ExtendedCopy { .. } | Cmd::ReceiveCopyResults { .. } => CommandClass::Write,
        Cmd::PersistentReserveIn(_) | Cmd::PersistentReserveOut(_) => CommandClass::PersistentReserve,
        Cmd::Reserve => CommandClass::Reserve,
        Cmd::Release => CommandClass::Release,
    }
}

#[cfg(test)]
#[path = "reservations_tests.rs"]
mod tests;
