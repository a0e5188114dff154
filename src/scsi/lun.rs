//! The LUN table of a target, per-initiator access lists, I_T nexus
//! state (unit attentions, aborted task sets) and each LUN's reservations.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use arc_swap::ArcSwap;

use super::alua::{Alua, PortGroupConfig, TargetPort};
use super::aptpl::AptplFile;
use super::backstore::BackstoreConfig;

#[path = "lun_aio.rs"]
mod aio;
#[path = "lun_rbd.rs"]
mod rbd_aio;
pub use super::backstore::ConfigError;
use super::cdb::{op, Cmd};
use super::disk;
use super::reservations::{
    insufficient_registration_resources, reservation_class, Capabilities, CommandClass, Persist, PrOutCdb,
    Refusal, RegistrantId, Reservations,
};
use super::sense::Sense;
pub use super::table::{Access, PeerFilter};
pub(super) use super::table::{Counted, LunEntry, LunTable, Mapped};
use super::task_set::{AbortScope, TaskSets};
use super::xcopy::{self, CopyManager, CopyResults};
use super::{with_parameter_list, Completion, DataDir, Plan, ScsiStatus};
use crate::mem::DmaBuf;
pub use aio::{AsyncEngine, Started};
pub use rbd_aio::RbdEngine;

/// An SRP initiator port identifier (SRP r16a 4.7): the 16-byte initiator
/// port ID of the SRP_LOGIN_REQ.
pub type InitiatorPortId = [u8; 16];

/// One LUN of a [`TargetConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunConfig {
    /// LUN number, 0..=16383 (single level, peripheral or flat space
    /// addressing, SAM-5 4.7).
    pub lun: u16,
    pub backstore: BackstoreConfig,
    /// Further restricts the target's access list for this LUN.
    pub access: Option<Access>,
    /// Unit serial number (printable ASCII, at most 64 bytes); derived
    /// stably from the backing file's path, or the target name and LUN
    /// number for RAM, when `None`.
    pub serial: Option<String>,
    /// Initiators that see this LUN write-protected (an ACL's read-only
    /// mapping): their writes get DATA PROTECT, WRITE PROTECTED.
    pub read_only_for: HashSet<InitiatorPortId>,
    /// The NAA IEEE Registered Extended designator (SPC-4 7.8.6.6.5) of
    /// VPD page 83h; derived from the serial number when `None`.
    pub naa: Option<[u8; 16]>,
    /// Offer logical block provisioning (UNMAP, LBPME) where the backstore
    /// can deallocate.
    pub thin: bool,
    /// Initiators that see this LUN under another number (an ACL's mapped
    /// LUN); each number is unique among the LUNs its initiator sees.
    pub mapped_as: BTreeMap<InitiatorPortId, u16>,
}

impl LunConfig {
    /// A LUN visible to everyone allowed on the target, with a derived serial.
    pub fn new(lun: u16, backstore: BackstoreConfig) -> LunConfig {
        LunConfig {
            lun,
            backstore,
            access: None,
            serial: None,
            read_only_for: HashSet::new(),
            naa: None,
            thin: true,
            mapped_as: BTreeMap::new(),
        }
    }
}

/// A target's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// Target name; seeds the identity of RAM LUNs.
    pub name: String,
    pub luns: Vec<LunConfig>,
    /// Which initiators may log in.
    pub access: Access,
    /// Largest data transfer of one command the transport accepts, in
    /// bytes (a multiple of 4096); reported as MAXIMUM TRANSFER LENGTH.
    pub max_transfer_bytes: u32,
    /// IEEE company identifier (24 bits) in the NAA 6 designators.
    pub naa_company_id: u32,
    /// Where persistent reservations with APTPL = 1 are saved, one file
    /// per LUN (see [`aptpl`](super::aptpl)); `None`: APTPL is not
    /// supported (PTPL_C = 0).
    pub state_dir: Option<PathBuf>,
    /// Addresses RDMA/CM logins must come from, per ACL.
    pub peers: PeerFilter,
    /// Configured target port groups (ALUA, `alua.rs`); ports nobody
    /// configured get a group each.
    pub port_groups: Vec<PortGroupConfig>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            name: "srptd".into(),
            luns: Vec::new(),
            access: Access::Any,
            max_transfer_bytes: 1 << 20,
            // The OUI used by the Linux SCSI target (LIO), so identifiers
            // look familiar to tools that special-case it; configurable.
            naa_company_id: 0x001405,
            state_dir: None,
            peers: PeerFilter::default(),
            port_groups: Vec::new(),
        }
    }
}

/// A unit serial number srptd accepts (VPD page 80h, SPC-4 7.8.15): 1 to
/// 64 printable ASCII characters without spaces.
pub fn valid_serial(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Why [`valid_serial`] refuses a serial number.
pub const SERIAL_RULE: &str = "must be 1 to 64 printable ASCII characters without spaces";

/// A configurable NAA designator: NAA IEEE Registered Extended (NAA 6h,
/// SPC-4 7.8.6.6.5), the only 16-byte NAA format.
pub fn valid_naa(n: &[u8; 16]) -> bool {
    n[0] >> 4 == 6
}

/// Why [`valid_naa`] refuses a designator.
pub const NAA_RULE: &str =
    "expected an NAA IEEE Registered Extended identifier: 32 hex digits starting with 6";

/// Highest LUN number (flat space addressing, SAM-5 4.7.7).
pub const MAX_LUN: u16 = 0x3fff;

/// Decodes a single-level 8-byte SAM LUN (SAM-5 4.7): peripheral device
/// addressing (00b, bus 0) or flat space addressing (01b).
pub fn decode_lun(l: [u8; 8]) -> Option<u16> {
    if l[2..] != [0; 6] {
        return None;
    }
    match l[0] >> 6 {
        0 if l[0] == 0 => Some(u16::from(l[1])),
        1 => Some(u16::from(l[0] & 0x3f) << 8 | u16::from(l[1])),
        _ => None,
    }
}

/// Encodes a LUN the way Linux does (`int_to_scsilun`): peripheral
/// addressing below 256, flat space above.
pub fn encode_lun(lun: u16) -> [u8; 8] {
    let mut l = [0u8; 8];
    if lun < 256 {
        l[1] = lun as u8;
    } else {
        l[0] = 0x40 | (lun >> 8) as u8;
        l[1] = lun as u8;
    }
    l
}

/// The reservations of one LUN, shared by every I_T nexus, and where they
/// are saved.
#[derive(Debug)]
pub(super) struct LunReservations {
    state: Mutex<Reservations>,
    /// Fast path: false while no reservation is held, so nothing conflicts
    /// and commands need not take the lock.
    restricted: AtomicBool,
    /// Some registration or reservation exists: commands do not use the
    /// zero-copy path (which would move data before the command runs, past
    /// the run-time conflict and abort checks).
    in_use: AtomicBool,
    file: Option<AptplFile>,
}

impl LunReservations {
    pub(super) fn new(state: Reservations, file: Option<AptplFile>) -> LunReservations {
        LunReservations {
            restricted: AtomicBool::new(state.restricts()),
            in_use: AtomicBool::new(state.restricts() || !state.registrations.is_empty()),
            state: Mutex::new(state),
            file,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Reservations> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn caps(&self) -> Capabilities {
        Capabilities {
            ptpl: self.file.is_some(),
        }
    }

    /// Whether a command of `class` from I_T nexus `nexus` may run now.
    pub(super) fn allows(&self, nexus: &NexusId, class: CommandClass) -> bool {
        if !self.restricted.load(Ordering::Acquire) {
            return true;
        }
        self.lock().allows(nexus, class)
    }

    /// Changes the state under the lock and refreshes the fast-path flag.
    fn update<R>(&self, f: impl FnOnce(&mut Reservations) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        self.restricted.store(st.restricts(), Ordering::Release);
        self.in_use
            .store(st.restricts() || !st.registrations.is_empty(), Ordering::Release);
        r
    }
}

/// Facts about one LUN, for the transport and management.
#[derive(Clone, Debug)]
pub struct LunInfo {
    pub lun: u16,
    pub block_size: u32,
    pub num_blocks: u64,
    pub read_only: bool,
    /// Backstore I/O blocks: run commands on the worker pool.
    pub blocking: bool,
    pub serial: String,
    pub naa: [u8; 16],
    /// The whole LUN's memory, for RAM LUNs (register it once for RDMA).
    pub dma_buf: Option<Arc<DmaBuf>>,
    pub access: Option<Access>,
    /// The backstore as configured (`ram:256M`, `file:/path`).
    pub backstore: String,
    /// Initiators that see it write-protected.
    pub read_only_for: Vec<InitiatorPortId>,
    /// Initiators that see it under another number, and that number.
    pub mapped_as: Vec<(InitiatorPortId, u16)>,
}

/// The LUN table, shared by all channels of the target.
#[derive(Debug)]
pub struct Target {
    pub(super) name: String,
    pub(super) table: ArcSwap<LunTable>,
    /// Serialises changes of the table (one builds from the last).
    pub(super) change: Mutex<()>,
    pub(super) max_transfer_bytes: u32,
    pub(super) naa_company_id: u32,
    pub(super) state_dir: Option<PathBuf>,
    /// I_T nexuses by initiator port and relative target port (SAM-5 4.6).
    pub(super) nexuses: Mutex<HashMap<(InitiatorPortId, u16), Weak<Nexus>>>,
    pub(super) alua: Alua,
    /// Aborts across channels (`task_set.rs`).
    pub(super) task_sets: TaskSets,
    /// EXTENDED COPY's count of running copies (`xcopy.rs`).
    pub(super) copies: CopyManager,
    /// How long a change waits for a removed LUN's running commands
    /// ([`REMOVAL_WAIT`](super::live::REMOVAL_WAIT)).
    pub(super) drain_bound: std::time::Duration,
    /// This target, for backstores' size-change hooks (`live.rs`).
    pub(super) me: std::sync::OnceLock<Weak<Target>>,
}

/// 64-bit FNV-1a with a chosen offset basis.
pub(crate) fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// NAA IEEE Registered Extended designator (SPC-4 7.8.6.6.5): NAA 6h,
/// 24-bit company id, 36-bit vendor id and 64-bit extension, the last two
/// hashed from the serial number so they are stable.
pub(super) fn naa_from(company_id: u32, serial: &str) -> [u8; 16] {
    let a = fnv1a(0xcbf2_9ce4_8422_2325, serial.as_bytes());
    let b = fnv1a(0x8422_2325_cbf2_9ce4, serial.as_bytes());
    let vsid = a & 0xf_ffff_ffff;
    let cid = company_id & 0xff_ffff;
    let mut n = [0u8; 16];
    n[0] = 0x60 | (cid >> 20) as u8;
    n[1] = (cid >> 12) as u8;
    n[2] = (cid >> 4) as u8;
    n[3] = ((cid & 0xf) as u8) << 4 | (vsid >> 32) as u8;
    n[4..8].copy_from_slice(&(vsid as u32).to_be_bytes());
    n[8..16].copy_from_slice(&b.to_be_bytes());
    n
}

impl Target {
    /// Validates `cfg`, opens every backstore, and builds the table.
    pub fn new(cfg: TargetConfig) -> Result<Arc<Target>, ConfigError> {
        Self::with_drain_bound(cfg, super::live::REMOVAL_WAIT)
    }

    /// [`new`](Self::new), with removals waiting `drain_bound` for running
    /// commands.
    pub(super) fn with_drain_bound(
        cfg: TargetConfig,
        drain_bound: std::time::Duration,
    ) -> Result<Arc<Target>, ConfigError> {
        if cfg.max_transfer_bytes < 4096 || cfg.max_transfer_bytes % 4096 != 0 {
            return Err(ConfigError::Invalid {
                field: "max_transfer_bytes".into(),
                reason: "must be a nonzero multiple of 4096",
            });
        }
        if cfg.naa_company_id > 0xff_ffff {
            return Err(ConfigError::Invalid {
                field: "naa_company_id".into(),
                reason: "must fit in 24 bits",
            });
        }
        let mut target = Target {
            name: cfg.name,
            table: ArcSwap::from_pointee(LunTable::new(cfg.access, cfg.peers)),
            change: Mutex::new(()),
            max_transfer_bytes: cfg.max_transfer_bytes,
            naa_company_id: cfg.naa_company_id,
            state_dir: cfg.state_dir,
            nexuses: Mutex::new(HashMap::new()),
            alua: Alua::new(&cfg.port_groups)?,
            task_sets: TaskSets::default(),
            copies: CopyManager::default(),
            drain_bound,
            me: std::sync::OnceLock::new(),
        };
        let mut table = LunTable::clone(&target.table.load());
        for (i, l) in cfg.luns.iter().enumerate() {
            let field = format!("luns[{i}]");
            if table.luns.contains_key(&l.lun) {
                return Err(ConfigError::DuplicateLun {
                    field: format!("{field}.lun"),
                    lun: l.lun,
                });
            }
            let m = target.open_lun(&field, l, &table, true)?;
            table.luns.insert(l.lun, m);
        }
        table.index();
        target.table = ArcSwap::from_pointee(table);
        Ok(target.watching_sizes())
    }

    /// The channels' shared view of the task sets (cross-channel aborts).
    pub fn task_sets(&self) -> &TaskSets {
        &self.task_sets
    }

    /// The target name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Largest transfer per command, bytes.
    pub fn max_transfer_bytes(&self) -> u32 {
        self.max_transfer_bytes
    }

    /// Whether `ini` may log in (the target access list), from `peer`
    /// (the RDMA/CM peer address, if any).
    pub fn login_allowed(&self, ini: &InitiatorPortId, peer: Option<std::net::IpAddr>) -> bool {
        let t = self.table.load();
        t.access.allows(ini) && t.peers.allows(ini, peer)
    }

    /// The numbers (in the table) of the LUNs `ini` may see, ascending.
    pub fn luns_for(&self, ini: &InitiatorPortId) -> Vec<u16> {
        self.table.load().luns_for(ini)
    }

    /// The LUNs `ini` sees: (the number it uses, the table's number),
    /// ascending by the number it uses (what REPORT LUNS lists).
    pub fn lun_map(&self, ini: &InitiatorPortId) -> Vec<(u16, u16)> {
        self.table.load().lun_map(ini)
    }

    /// Every configured LUN.
    pub fn luns(&self) -> Vec<LunInfo> {
        self.table
            .load()
            .luns
            .iter()
            .map(|(&lun, m)| {
                let e = &m.entry;
                let s = e.disk.store();
                LunInfo {
                    lun,
                    block_size: s.block_size(),
                    num_blocks: s.num_blocks(),
                    read_only: s.read_only(),
                    blocking: s.is_blocking(),
                    serial: e.disk.serial().to_owned(),
                    naa: e.disk.naa(),
                    dma_buf: s.dma_buf().filter(|_| e.zero_copy).cloned(),
                    access: m.access.clone(),
                    backstore: m.config.backstore.kind.to_string(),
                    read_only_for: m.read_only_for.iter().copied().collect(),
                    mapped_as: m.config.mapped_as.iter().map(|(i, &n)| (*i, n)).collect(),
                }
            })
            .collect()
    }

    /// [`nexus_on`](Self::nexus_on) the target's first port (relative
    /// target port 1).
    pub fn nexus(self: &Arc<Self>, ini: InitiatorPortId) -> Arc<Nexus> {
        self.nexus_on(ini, self.alua.default_port())
    }

    /// Gets or creates the I_T nexus of `ini` through target port `port`;
    /// all channels of one initiator port through one target port share
    /// it. A new nexus starts with a POWER ON, RESET, OR BUS DEVICE RESET
    /// OCCURRED unit attention on each LUN it sees (SAM-5 5.14, unit
    /// attention conditions: the first command after an I_T nexus is
    /// formed reports the reset).
    pub fn nexus_on(self: &Arc<Self>, ini: InitiatorPortId, port: Arc<TargetPort>) -> Arc<Nexus> {
        let key = (ini, port.relative_id());
        let mut map = self.nexuses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(&key).and_then(Weak::upgrade) {
            return n;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let ua = self
            .luns_for(&ini)
            .into_iter()
            .map(|l| (l, VecDeque::from([Sense::power_on_reset()])))
            .collect();
        let n = Arc::new(Nexus {
            target: Arc::clone(self),
            ini,
            port,
            ua_pending: AtomicBool::new(true),
            ua: Mutex::new(ua),
            abort_gen: AtomicU64::new(0),
            aborted: Mutex::new(HashMap::new()),
            copies: CopyResults::default(),
        });
        map.insert(key, Arc::downgrade(&n));
        n
    }

    /// Live nexuses.
    pub(super) fn live_nexuses(&self) -> Vec<Arc<Nexus>> {
        let map = self.nexuses.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter_map(Weak::upgrade).collect()
    }

    /// The live I_T nexuses of `ini` (one per target port it logged in
    /// through).
    fn nexuses_of(&self, ini: &InitiatorPortId) -> Vec<Arc<Nexus>> {
        let map = self.nexuses.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|((i, _), _)| i == ini)
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }

    /// The persistent reservation state of `lun` (for management and tests).
    pub fn reservations(&self, lun: u16) -> Option<Reservations> {
        self.table
            .load()
            .luns
            .get(&lun)
            .map(|m| m.entry.pr.lock().clone())
    }

    /// Establishes unit attention `ua` on `lun` for every nexus that sees it.
    pub fn unit_attention_all(&self, lun: u16, ua: Sense) {
        let t = self.table.load();
        for n in self.live_nexuses() {
            if t.visible(lun, &n.ini).is_some() {
                n.add_ua(lun, ua);
            }
        }
    }
}

/// A CDB decoded and field-checked once, by [`Nexus::plan_command`], for
/// the LUN it addresses: what [`Nexus::run`] executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    lun: [u8; 8],
    /// Operation code (its group gives the CDB length, SPC-4 4.2.5.1).
    opcode: u8,
    cmd: Cmd,
    /// The nexus's abort generation when the command entered the task
    /// set: a later PREEMPT AND ABORT of this LUN aborts it.
    epoch: u64,
    /// Planned as a RESERVATION CONFLICT: moves no data and runs as one.
    conflict: bool,
    /// The target's cross-channel abort generation when planned
    /// (`task_set.rs`): a later LUN RESET or task set abort covering it
    /// aborts it.
    task_set_gen: u64,
    /// The [`LunEntry::uid`] it was planned for (0: no LUN there).
    uid: u64,
    /// The table's number of that LUN (the initiator may use another).
    unit: Option<u16>,
    /// Running it does backstore I/O that may block (file I/O, or saving
    /// the APTPL state): the transport runs it on the worker pool.
    blocking: bool,
}

/// Whether running `cmd` on LUN `e` may block the thread: backstore I/O of
/// a file LUN, or a PERSISTENT RESERVE OUT that writes and fsyncs the
/// APTPL state; an EXTENDED COPY (it copies up to 128 MiB).
fn blocks_on(e: &LunEntry, cmd: &Cmd) -> bool {
    match cmd {
        Cmd::PersistentReserveOut(_) => return e.pr.file.is_some(),
        Cmd::ExtendedCopy { .. } => return true,
        _ => {}
    }
    e.disk.store().is_blocking()
        && matches!(
            cmd,
            Cmd::Read { .. }
                | Cmd::Write { .. }
                | Cmd::WriteAndVerify { .. }
                | Cmd::CompareAndWrite { .. }
                | Cmd::Verify { .. }
                | Cmd::SyncCache { .. }
                | Cmd::WriteSame { .. }
                | Cmd::Unmap { .. }
        )
}

impl ScsiCommand {
    /// The SAM LUN the command addresses.
    pub fn lun(&self) -> [u8; 8] {
        self.lun
    }

    /// The decoded command.
    pub fn cmd(&self) -> &Cmd {
        &self.cmd
    }

    /// The number in the target's LUN table of the LUN it was planned for
    /// (task sets and aborts are the table's LUNs'); `None`: no LUN there.
    pub fn unit(&self) -> Option<u16> {
        self.unit
    }
}

/// An I_T nexus's identity: initiator port and relative target port
/// identifier (SAM-5 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NexusId {
    pub initiator: InitiatorPortId,
    pub port: u16,
}

/// Per I_T nexus state: pending unit attentions per LUN, task sets
/// aborted by another I_T nexus.
#[derive(Debug)]
pub struct Nexus {
    target: Arc<Target>,
    ini: InitiatorPortId,
    /// The target port of the I_T nexus (ALUA state, VPD 83h).
    port: Arc<TargetPort>,
    /// Fast path: false when no unit attention is queued anywhere.
    ua_pending: AtomicBool,
    ua: Mutex<HashMap<u16, VecDeque<Sense>>>,
    /// Bumped by each PREEMPT AND ABORT that aborts this nexus's tasks.
    abort_gen: AtomicU64,
    /// Per LUN, the abort generation of its last abort: commands that
    /// entered the task set before it are aborted.
    aborted: Mutex<HashMap<u16, u64>>,
    /// Its EXTENDED COPY list identifiers and their status (`xcopy.rs`).
    copies: CopyResults,
}

/// Why a command did not complete with GOOD.
enum Stop {
    Check(Sense),
    Conflict,
    Aborted,
}

impl From<Sense> for Stop {
    fn from(s: Sense) -> Stop {
        Stop::Check(s)
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        match r {
            Refusal::Conflict => Stop::Conflict,
            Refusal::Check(s) => Stop::Check(s),
        }
    }
}

fn completion(r: Result<u32, Stop>) -> Completion {
    match r {
        Ok(n) => Completion::good(n),
        Err(Stop::Check(s)) => Completion::check(s),
        Err(Stop::Conflict) => Completion {
            status: ScsiStatus::RESERVATION_CONFLICT,
            sense: None,
            data_in_len: 0,
        },
        Err(Stop::Aborted) => Completion {
            status: ScsiStatus::TASK_ABORTED,
            sense: None,
            data_in_len: 0,
        },
    }
}

impl Drop for Nexus {
    /// I_T nexus loss: SPC-2 reservations end (SPC-2 5.5.1); registrations
    /// and persistent reservations stay (SPC-4 5.13.1).
    fn drop(&mut self) {
        let id = self.id();
        if self.target.nexuses_of(&self.ini).iter().any(|n| n.id() == id) {
            // The same I_T nexus formed again already.
            return;
        }
        for m in self.target.table.load().luns.values() {
            m.entry.pr.update(|r| r.nexus_lost(&id));
        }
    }
}

impl Nexus {
    /// The target.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The initiator port.
    pub fn initiator(&self) -> &InitiatorPortId {
        &self.ini
    }

    /// The target port.
    pub fn port(&self) -> &TargetPort {
        &self.port
    }

    /// The initiator port and relative target port of this I_T nexus.
    pub fn id(&self) -> NexusId {
        NexusId {
            initiator: self.ini,
            port: self.port.relative_id(),
        }
    }

    /// The LUN a SAM LUN addresses in table `t`, with its number in the
    /// table (which an ACL's mapping may make differ from the number the
    /// initiator uses), if this nexus sees it.
    fn entry<'t>(&self, t: &'t LunTable, lun: [u8; 8]) -> Option<(u16, &'t Mapped)> {
        t.resolve(&self.ini, decode_lun(lun)?)
    }

    /// The number in the target's LUN table of the LUN that SAM LUN `lun`
    /// addresses for this nexus now, if it sees one (task management
    /// functions and statistics name the table's LUNs).
    pub fn unit(&self, lun: [u8; 8]) -> Option<u16> {
        self.entry(&self.target.table.load(), lun).map(|(id, _)| id)
    }

    /// Whether this nexus sees LUN `m` write-protected (an ACL's read-only
    /// mapping) and `cmd` would write the medium: DATA PROTECT, WRITE
    /// PROTECTED (SBC-3 4.11).
    fn check_write_protect(&self, m: &Mapped, cmd: &Cmd) -> Result<(), Sense> {
        let writes = matches!(
            cmd,
            Cmd::Write { .. }
                | Cmd::WriteAndVerify { .. }
                | Cmd::WriteSame { .. }
                | Cmd::Unmap { .. }
                | Cmd::CompareAndWrite { .. }
        );
        if writes && m.read_only_to(&self.ini) {
            return Err(Sense::write_protected());
        }
        Ok(())
    }

    /// Queues a unit attention for `lun`. A 29h (reset) condition has the
    /// highest priority and supersedes everything queued (SAM-5 5.14);
    /// others are appended unless already pending.
    pub fn add_ua(&self, lun: u16, ua: Sense) {
        let mut m = self.ua.lock().unwrap_or_else(|p| p.into_inner());
        let q = m.entry(lun).or_default();
        if ua.asc == 0x29 {
            q.clear();
            q.push_back(ua);
        } else if !q.iter().any(|s| (s.asc, s.ascq) == (ua.asc, ua.ascq)) {
            q.push_back(ua);
        }
        self.ua_pending.store(true, Ordering::Release);
    }

    /// Drops the unit attentions pending for `lun` (it was removed).
    pub(super) fn clear_ua(&self, lun: u16) {
        let mut m = self.ua.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&lun);
    }

    /// Removes and returns the oldest unit attention pending for `lun`.
    fn take_ua(&self, lun: u16) -> Option<Sense> {
        if !self.ua_pending.load(Ordering::Acquire) {
            return None;
        }
        let mut m = self.ua.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.get_mut(&lun).and_then(VecDeque::pop_front);
        if m.values().all(VecDeque::is_empty) {
            self.ua_pending.store(false, Ordering::Release);
        }
        s
    }

    /// Whether a unit attention is pending for `lun` (by number).
    pub fn has_unit_attention(&self, lun: u16) -> bool {
        let m = self.ua.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&lun).is_some_and(|q| !q.is_empty())
    }

    /// Decodes the CDB for `lun` (the 8-byte SAM LUN from the SRP IU) and
    /// decides what data moves.
    ///
    /// Errors are the sense for a CHECK CONDITION: unmapped LUN 25h/00h
    /// (SAM-5, incorrect logical unit selection; INQUIRY and REPORT LUNS still work there),
    /// pending unit attention (reported once, then cleared; INQUIRY, REPORT
    /// LUNS and REQUEST SENSE neither report nor clear it, SAM-5 5.14 with
    /// UA_INTLCK_CTRL = 00b), unsupported opcode 20h/00h, invalid field 24h,
    /// LBA out of range 21h/00h, write to a read-only LUN DATA PROTECT.
    pub fn plan(&self, lun: [u8; 8], cdb: &[u8]) -> Result<Plan, Sense> {
        self.plan_command(lun, cdb).map(|(_, plan)| plan)
    }

    /// [`plan`](Self::plan), also returning the decoded command, which
    /// [`run`](Self::run) executes without decoding the CDB again.
    pub fn plan_command(&self, lun: [u8; 8], cdb: &[u8]) -> Result<(ScsiCommand, Plan), Sense> {
        let &opcode = cdb.first().ok_or_else(Sense::invalid_opcode)?;
        let t = self.target.table.load();
        let entry = self.entry(&t, lun);
        let epoch = self.abort_gen.load(Ordering::Acquire);
        let task_set_gen = self.target.task_sets.current();
        let uid = entry.map_or(0, |(_, m)| m.entry.uid);
        let unit = entry.map(|(id, _)| id);
        let decoded = |cmd: Cmd| ScsiCommand {
            lun,
            opcode,
            blocking: entry.is_some_and(|(_, m)| blocks_on(&m.entry, &cmd)),
            cmd,
            epoch,
            task_set_gen,
            conflict: false,
            uid,
            unit,
        };
        match opcode {
            op::INQUIRY => {
                let cmd = Cmd::parse(cdb)?;
                let plan = match entry {
                    Some((_, m)) => m.entry.disk.plan(&cmd, opcode)?,
                    None => unmapped_inquiry(&cmd).map(|_| Plan::new(DataDir::In, alloc_of(&cmd)))?,
                };
                Ok((decoded(cmd), plan))
            }
            op::REPORT_LUNS => {
                let cmd = Cmd::parse(cdb)?;
                check_report_luns(&cmd)?;
                Ok((decoded(cmd), Plan::new(DataDir::In, alloc_of(&cmd))))
            }
            op::REQUEST_SENSE => {
                let cmd = Cmd::parse(cdb)?;
                check_request_sense(&cmd)?;
                Ok((decoded(cmd), Plan::new(DataDir::In, alloc_of(&cmd))))
            }
            _ => {
                let (id, m) = entry.ok_or_else(Sense::lun_not_supported)?;
                let e = &m.entry;
                if let Some(ua) = self.take_ua(id) {
                    return Err(ua);
                }
                let cmd = Cmd::parse(cdb)?;
                self.check_access(&cmd)?;
                // The reservation check, before the command's own checks
                // and before any data moves (SPC-4 5.13.1): a conflicting
                // command transfers nothing and ends in RESERVATION
                // CONFLICT when it runs.
                if !e.pr.allows(&self.id(), reservation_class(&cmd)) {
                    let c = ScsiCommand {
                        conflict: true,
                        ..decoded(cmd)
                    };
                    return Ok((c, Plan::none()));
                }
                self.check_write_protect(m, &cmd)?;
                let mut plan = e.disk.plan(&cmd, opcode)?;
                if !e.zero_copy || e.pr.in_use.load(Ordering::Acquire) {
                    plan.direct = None;
                }
                Ok((decoded(cmd), plan))
            }
        }
    }

    /// Decodes and runs a CDB that was not planned with
    /// [`plan_command`](Self::plan_command) (no unit attention is reported).
    /// `data[offset..offset+len]` is its buffer: for data-out it holds the
    /// bytes the transport fetched, for data-in the command writes up to
    /// `len` bytes into it. Blocks on file I/O: run commands for which
    /// [`is_blocking`](Self::is_blocking) is true on the worker pool. For
    /// READ/WRITE with a [`DirectIo`](super::DirectIo) plan, passing the
    /// plan's buffer and offset copies nothing.
    pub fn execute(&self, lun: [u8; 8], cdb: &[u8], data: &DmaBuf, offset: usize, len: u32) -> Completion {
        completion(
            self.decode_unplanned(lun, cdb)
                .map_err(Stop::from)
                .and_then(|cmd| self.run_inner(&cmd, data, offset, len)),
        )
    }

    /// Runs a command decoded by [`plan_command`](Self::plan_command), as
    /// [`execute`](Self::execute) runs a CDB. A command whose task set a
    /// PREEMPT AND ABORT aborted since it was planned completes with
    /// TASK ABORTED status and does nothing; the transport must not answer
    /// it (TAS = 0, SAM-5 5.6).
    pub fn run(&self, cmd: &ScsiCommand, data: &DmaBuf, offset: usize, len: u32) -> Completion {
        completion(self.run_inner(cmd, data, offset, len))
    }

    /// Whether another I_T nexus's PREEMPT AND ABORT aborted `c` after it
    /// was planned (SPC-4 5.13.11.5), or a task management function of
    /// another channel did (`task_set.rs`).
    pub fn is_aborted(&self, c: &ScsiCommand) -> bool {
        let Some(id) = c.unit else {
            return false;
        };
        if self
            .target
            .task_sets
            .aborted_since(c.task_set_gen, id, &self.id())
        {
            return true;
        }
        if c.epoch == self.abort_gen.load(Ordering::Acquire) {
            return false;
        }
        let m = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&id).is_some_and(|&g| g > c.epoch)
    }

    /// Aborts every task of this nexus on `lun` that is not yet running
    /// (PREEMPT AND ABORT from another I_T nexus).
    fn abort_task_set(&self, lun: u16) {
        let mut m = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        let g = self.abort_gen.fetch_add(1, Ordering::AcqRel) + 1;
        m.insert(lun, g);
    }

    /// The checks `execute` makes before running: an empty CDB is an
    /// invalid opcode; a LUN that is not mapped answers only INQUIRY,
    /// REPORT LUNS and REQUEST SENSE.
    fn decode_unplanned(&self, lun: [u8; 8], cdb: &[u8]) -> Result<ScsiCommand, Sense> {
        let &opcode = cdb.first().ok_or_else(Sense::invalid_opcode)?;
        let t = self.target.table.load();
        let entry = self.entry(&t, lun);
        if !matches!(opcode, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE) && entry.is_none() {
            return Err(Sense::lun_not_supported());
        }
        let cmd = Cmd::parse(cdb)?;
        Ok(ScsiCommand {
            lun,
            opcode,
            blocking: entry.is_some_and(|(_, m)| blocks_on(&m.entry, &cmd)),
            cmd,
            epoch: self.abort_gen.load(Ordering::Acquire),
            task_set_gen: self.target.task_sets.current(),
            conflict: false,
            uid: entry.map_or(0, |(_, m)| m.entry.uid),
            unit: entry.map(|(id, _)| id),
        })
    }

    fn run_inner(&self, c: &ScsiCommand, data: &DmaBuf, off: usize, len: u32) -> Result<u32, Stop> {
        if self.is_aborted(c) {
            return Err(Stop::Aborted);
        }
        let t = self.target.table.load();
        // A LUN removed (or replaced) since the command was planned.
        let entry = self
            .entry(&t, c.lun)
            .filter(|(_, m)| c.uid == 0 || m.entry.uid == c.uid);
        let put = |bytes: &[u8]| -> Result<u32, Sense> {
            let n = bytes.len().min(len as usize);
            if !data.contains(off as u64, n as u64) {
                return Err(Sense::internal_target_failure());
            }
            data.write(off, &bytes[..n]);
            Ok(n as u32)
        };
        match c.cmd {
            Cmd::Inquiry { .. } if entry.is_none() => Ok(put(&unmapped_inquiry(&c.cmd)?)?),
            Cmd::ReportLuns { .. } => {
                check_report_luns(&c.cmd)?;
                Ok(put(&self.report_luns(&c.cmd))?)
            }
            Cmd::RequestSense { .. } => {
                check_request_sense(&c.cmd)?;
                // SPC-4 6.39: report (and clear) a pending unit attention,
                // else NO SENSE. For an incorrect LUN, the sense data is
                // LOGICAL UNIT NOT SUPPORTED with GOOD status (SAM-5, incorrect logical unit
                // selection).
                let s = match entry {
                    None => Sense::lun_not_supported(),
                    Some((id, _)) => self.take_ua(id).unwrap_or_else(Sense::no_sense),
                };
                Ok(put(&s.to_fixed())?)
            }
            _ => {
                let (id, m) = self.admitted(&t, c)?;
                let e = &m.entry;
                // Counted in before it touches the backstore: a LUN removed
                // from now on is flushed only after this command has ended
                // (`drain.rs`); one removed already refuses it.
                let _running = e.in_flight.enter().ok_or_else(Sense::lun_not_supported)?;
                match c.cmd {
                    Cmd::PersistentReserveIn(pr) => {
                        let d = e.pr.lock().persistent_reserve_in(pr.action, e.pr.caps());
                        Ok(put(&d)?)
                    }
                    Cmd::PersistentReserveOut(pr) => {
                        self.persistent_reserve_out(id, e, &t, &pr, data, off, len)
                    }
                    Cmd::Inquiry {
                        evpd: true,
                        page: 0x83,
                        ..
                    } => Ok(put(&e.disk.device_identification(&self.port.designators()))?),
                    Cmd::ReportTargetPortGroups { extended, .. } => {
                        Ok(put(&self.target.alua.report(extended))?)
                    }
                    Cmd::ExtendedCopy { len: n } => {
                        let copies = (&self.target.copies, &self.copies);
                        Ok(xcopy::extended_copy(&t, &self.id(), copies, n, data, off, len)?)
                    }
                    Cmd::ReceiveCopyResults { sa, list_id, .. } => {
                        Ok(put(&self.copies.receive(sa, list_id)?)?)
                    }
                    Cmd::Reserve => Ok(e.pr.update(|r| r.reserve_scsi2(&self.id())).map(|()| 0)?),
                    Cmd::Release => {
                        e.pr.update(|r| r.release_scsi2(&self.id()));
                        Ok(0)
                    }
                    _ => Ok(e.disk.execute(&c.cmd, c.opcode, data, off, len)?),
                }
            }
        }
    }

    /// The LUN `c` was planned for, once the checks every command on a LUN
    /// passes when it runs have passed: the target port's state may have
    /// changed since planning, and a reservation made since then applies
    /// to it too.
    fn admitted<'t>(&self, t: &'t LunTable, c: &ScsiCommand) -> Result<(u16, &'t Mapped), Stop> {
        let (id, m) = self
            .entry(t, c.lun)
            .filter(|(_, m)| c.uid == 0 || m.entry.uid == c.uid)
            .ok_or_else(Sense::lun_not_supported)?;
        self.check_access(&c.cmd)?;
        if c.conflict || !m.entry.pr.allows(&self.id(), reservation_class(&c.cmd)) {
            return Err(Stop::Conflict);
        }
        self.check_write_protect(m, &c.cmd)?;
        Ok((id, m))
    }

    /// PERSISTENT RESERVE OUT: the next state is computed, saved when
    /// APTPL is in effect (file written, fsync'ed, renamed, directory
    /// fsync'ed), and only then committed; a failed save is INSUFFICIENT
    /// REGISTRATION RESOURCES and changes nothing. Then the unit
    /// attentions and aborts it causes reach the other I_T nexuses.
    #[allow(clippy::too_many_arguments)]
    fn persistent_reserve_out(
        &self,
        lun: u16,
        e: &LunEntry,
        table: &LunTable,
        cdb: &PrOutCdb,
        data: &DmaBuf,
        off: usize,
        len: u32,
    ) -> Result<u32, Stop> {
        cdb.check_length()?;
        let target = &self.target;
        let allowed = |ini: &InitiatorPortId| table.visible(lun, ini).is_some();
        let port_exists = |rtpi: u16| target.alua.has_port(rtpi);
        let caps = e.pr.caps();
        let fx = e.pr.update(|st| {
            let (next, fx) = with_parameter_list(data, off, len, cdb.len, |p| {
                st.persistent_reserve_out(&self.id(), cdb, p, caps, &allowed, &port_exists)
            })??;
            if let Some(f) = &e.pr.file {
                let saved = match fx.persist {
                    Persist::Save => f.save(&next),
                    Persist::Remove => f.remove(),
                    Persist::Unchanged => Ok(()),
                };
                if let Err(err) = saved {
                    tracing::error!(
                        lun,
                        file = %f.path().display(),
                        error = %err,
                        "cannot save persistent reservations; PERSISTENT RESERVE OUT refused"
                    );
                    return Err(Refusal::Check(insufficient_registration_resources()));
                }
            }
            *st = next;
            Ok(fx)
        })?;
        // A registrant is one I_T nexus, or (ALL_TG_PT) its initiator
        // port's nexuses through every target port.
        let nexuses_of = |g: &RegistrantId| {
            let mut v = target.nexuses_of(&g.initiator);
            v.retain(|n| g.covers(&n.id()));
            v
        };
        for (g, ua) in fx.unit_attentions {
            for n in nexuses_of(&g) {
                n.add_ua(lun, ua);
            }
        }
        for g in &fx.aborts {
            for n in nexuses_of(g) {
                n.abort_task_set(lun);
            }
        }
        if !fx.aborts.is_empty() {
            // Their channels end the tasks; the PERSISTENT RESERVE OUT
            // waits for that before GOOD (`proto::task_set`).
            let registrants = fx.aborts;
            target
                .task_sets
                .publish(AbortScope::Registrants { lun, registrants }, None);
        }
        Ok(0)
    }

    /// Whether [`run`](Self::run) would do (blocking) backstore I/O for
    /// this command (decided when it was planned).
    pub fn runs_blocking(&self, c: &ScsiCommand) -> bool {
        c.blocking
    }

    /// Whether `execute` would do (blocking) backstore I/O for this command.
    pub fn is_blocking(&self, lun: [u8; 8], cdb: &[u8]) -> bool {
        self.decode_unplanned(lun, cdb).is_ok_and(|c| c.blocking)
    }

    /// LOGICAL UNIT RESET task management function: establishes a unit
    /// attention BUS DEVICE RESET FUNCTION OCCURRED (29h/03h, SAM-5 7.7)
    /// for every I_T nexus that sees the LUN and releases its SPC-2
    /// reservation (persistent reservations stay, SPC-4 5.13.1). Aborting
    /// the LUN's tasks is the transport's part. False if the LUN is not
    /// mapped for this initiator.
    pub fn lun_reset(&self, lun: [u8; 8]) -> bool {
        let t = self.target.table.load();
        let Some((id, m)) = self.entry(&t, lun) else {
            return false;
        };
        m.entry.pr.update(Reservations::lun_reset);
        self.target.unit_attention_all(id, Sense::bus_device_reset());
        true
    }

    /// REPORT LUNS parameter data (SPC-4 6.33).
    fn report_luns(&self, cmd: &Cmd) -> Vec<u8> {
        let Cmd::ReportLuns { select, .. } = *cmd else {
            return Vec::new();
        };
        // SELECT REPORT 01h: well-known LUs only — there are none.
        // The numbers this initiator uses (an ACL may map a LUN under
        // another number).
        let mut luns: Vec<u16> = if select == 1 {
            Vec::new()
        } else {
            self.target
                .lun_map(&self.ini)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        if luns.is_empty() && select != 1 {
            // No LUN is accessible: report LUN 0 so the initiator's scan
            // finds the target (it answers INQUIRY with PQ 011b). LIO does
            // the same; SPC-4 does not forbid it.
            luns.push(0);
        }
        let mut d = vec![0u8; 8];
        d[..4].copy_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
        for l in luns {
            d.extend_from_slice(&encode_lun(l));
        }
        d
    }
}

fn alloc_of(cmd: &Cmd) -> u32 {
    match *cmd {
        Cmd::Inquiry { alloc, .. } | Cmd::ReportLuns { alloc, .. } | Cmd::RequestSense { alloc, .. } => alloc,
        _ => 0,
    }
}

fn check_report_luns(cmd: &Cmd) -> Result<(), Sense> {
    if let Cmd::ReportLuns { select, alloc } = *cmd {
        // SPC-4 6.33: SELECT REPORT 00h, 01h, 02h; others are reserved.
        if select > 2 {
            return Err(Sense::invalid_field_in_cdb_at(2, None));
        }
        // SPC-3 6.21 required ALLOCATION LENGTH >= 16 (INVALID FIELD IN CDB
        // otherwise); SPC-4 6.33 softens it to "should". LIO rejects too.
        if alloc < 16 {
            return Err(Sense::invalid_field_in_cdb_at(6, None));
        }
    }
    Ok(())
}

fn check_request_sense(cmd: &Cmd) -> Result<(), Sense> {
    // SPC-4 6.39: DESC = 1 without descriptor-format support → INVALID
    // FIELD IN CDB.
    if let Cmd::RequestSense { desc: true, .. } = *cmd {
        return Err(Sense::invalid_field_in_cdb_at(1, Some(0)));
    }
    Ok(())
}

/// INQUIRY data for an address with no logical unit: peripheral qualifier
/// 011b, device type 1Fh (SPC-4 6.6.2). The supported VPD pages page is
/// the only VPD page offered.
fn unmapped_inquiry(cmd: &Cmd) -> Result<Vec<u8>, Sense> {
    match *cmd {
        Cmd::Inquiry {
            evpd: false, page: 0, ..
        } => Ok(disk::standard_inquiry(disk::PQ_NO_LUN)),
        Cmd::Inquiry {
            evpd: true, page: 0, ..
        } => Ok(vec![disk::PQ_NO_LUN, 0, 0, 1, 0]),
        _ => Err(Sense::invalid_field_in_cdb_at(2, None)),
    }
}
