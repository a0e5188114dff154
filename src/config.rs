//! srptd's settings: a TOML config file (`srptd --config FILE`), the
//! command-line flags that override it, and the one place every value is
//! checked and turned into the daemon's [`Options`] and the SCSI
//! [`TargetConfig`].
//!
//! A value remembers where it came from ([`Origin`]), so an error names the
//! file, line and key (`/etc/srptd.toml:12: limits.max_transfer = "3K": ...`)
//! or the flag (`--max-transfer 3K: ...`). See `docs/configuration.md` for
//! the file's keys and `contrib/srptd.toml` for a sample.
//!
//! Access: with a config file it is explicit. Initiators come from `[[acl]]`
//! tables; a file without one lets nobody in, and letting everyone in must
//! be written out (`initiator = "ANY"`), which [`Loaded::warnings`] reports.
//! Without a file the quick-start default (`--allow ANY`) applies.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::driver::{default_pollers, AdminSocket, Options, PollerCpus};
use crate::proto::{LoginLimits, TargetPortId};
use crate::scsi::alua::{check_groups, GroupField};
use crate::scsi::backstore::parse_size;
use crate::scsi::lun;
use crate::scsi::{Access, AccessState, BackstoreConfig, LunConfig, PortGroupConfig, TargetConfig, MAX_LUN};
use crate::wire::parse_hex;

/// Bounds of the numeric settings, each stated once (checked in
/// [`Settings::build`] for flags and file alike).
pub mod bounds {
    /// Credits per channel.
    pub const QUEUE_DEPTH: (u32, u32) = (1, 4096);
    /// Largest request IU, bytes.
    pub const MAX_IT_IU_LEN: (u32, u32) = (64, 1 << 20);
    /// Largest transfer of one command, bytes (multiple of 4 KiB).
    pub const MAX_TRANSFER: (u64, u64) = (4 << 10, 64 << 20);
    /// Data pool per channel, bytes (at least the largest transfer).
    pub const POOL_SIZE_MAX: u64 = 4 << 30;
    /// Poller threads.
    pub const POLLERS: (u16, u16) = (1, 64);
    /// File I/O threads per poller.
    pub const IO_THREADS: (u16, u16) = (1, 256);
    /// Shared receive queue slots.
    pub const SRQ_SIZE: (u32, u32) = (1, 65536);
    /// Poller threads' nice value (setpriority(2)'s range).
    pub const POLLER_NICE: (i32, i32) = (-20, 19);
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in.
    Default,
    /// A command-line flag (`--max-transfer`).
    Flag(&'static str),
    /// A key of the config file, on a line (1-based).
    File { path: PathBuf, line: usize, key: String },
    /// A parameter of an admin call (`lun_add`'s `backstore`).
    Param(&'static str),
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn new(value: T, origin: Origin) -> Self {
        Setting { value, origin }
    }

    fn default(value: T) -> Self {
        Setting::new(value, Origin::Default)
    }
}

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Origin,
    /// The value as written (empty when not applicable).
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Default => write!(f, "{}", self.reason),
            Origin::Flag(flag) if self.value.is_empty() => write!(f, "{flag}: {}", self.reason),
            Origin::Flag(flag) => write!(f, "{flag} {}: {}", self.value, self.reason),
            Origin::Param(p) if self.value.is_empty() => write!(f, "{p}: {}", self.reason),
            Origin::Param(p) => write!(f, "{p} = {}: {}", self.value, self.reason),
            Origin::File { path, line, key } if self.value.is_empty() => {
                write!(f, "{}:{line}: {key}: {}", path.display(), self.reason)
            }
            Origin::File { path, line, key } => {
                write!(
                    f,
                    "{}:{line}: {key} = {}: {}",
                    path.display(),
                    self.value,
                    self.reason
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(origin: &Origin, value: impl fmt::Display, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        origin: origin.clone(),
        value: value.to_string(),
        reason: reason.into(),
    })
}

/// One LUN to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunSetting {
    pub number: Setting<u16>,
    /// `ram:<size>`, `file:<path>` or `rbd:<pool>/<image>`, with `,ro` /
    /// `,bs=` options (and `,conf=` / `,id=` for `rbd:`).
    pub backstore: Setting<String>,
    pub read_only: Option<Setting<bool>>,
    pub block_size: Option<Setting<u32>>,
    pub serial: Option<Setting<String>>,
    /// NAA identifier, 32 hex digits (NAA 6).
    pub naa: Option<Setting<String>>,
    pub thin: Option<Setting<bool>>,
}

/// A target port group (ALUA, `docs/alua.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroupSetting {
    pub id: Setting<u16>,
    /// `device/port`, e.g. `rxe0/1`.
    pub ports: Setting<Vec<String>>,
    /// The asymmetric access state at start (default active/optimized).
    pub state: Option<Setting<String>>,
}

/// Who may log in, and which LUNs they see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclSetting {
    /// `ANY` or a 32-hex-digit initiator port ID.
    pub initiator: Setting<String>,
    /// LUNs this initiator sees and their numbers for it (`None`: all,
    /// under their own numbers).
    pub luns: Option<Setting<Vec<AclLun>>>,
    /// It sees its LUNs write-protected.
    pub read_only: Option<Setting<bool>>,
    /// RDMA/CM logins only from this address or network (`10.0.0.5`,
    /// `10.0.0.0/24`).
    pub address: Option<Setting<String>>,
}

/// Every setting, before checking. [`Settings::from_file`] reads a config
/// file into it, [`Settings::apply`] lays flags over it, and
/// [`Settings::build`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: Setting<String>,
    pub id_ext: Option<Setting<String>>,
    pub ioc_guid: Option<Setting<String>>,
    pub port: Setting<u16>,
    pub devices: Setting<Vec<String>>,
    pub dm: Setting<bool>,
    pub queue_depth: Setting<u32>,
    pub max_it_iu_len: Setting<u32>,
    pub immediate_data: Setting<bool>,
    pub max_transfer: Setting<String>,
    pub pool_size: Setting<String>,
    pub max_channel_memory: Option<Setting<String>>,
    pub pollers: Option<Setting<u16>>,
    /// `auto`, `none` or a CPU list ([`PollerCpus::parse`]).
    pub poller_cpus: Setting<String>,
    pub io_threads: Setting<u16>,
    pub io_uring: Setting<bool>,
    pub spin_us: Setting<u64>,
    pub poller_nice: Setting<i32>,
    pub software_read_depth: Setting<u32>,
    pub software_one_poller: Setting<bool>,
    pub srq: Setting<bool>,
    pub srq_size: Option<Setting<u32>>,
    /// The admin socket's path (`""` or `"none"`: no socket; unset: the
    /// default, which only warns when it cannot be opened).
    pub admin_socket: Option<Setting<String>>,
    /// The Prometheus listener's address (unset, `""`, `"none"`: none).
    pub metrics: Option<Setting<String>>,
    /// Where persistent reservations are kept across restarts (APTPL);
    /// `"none"`: not kept. Unset: [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<Setting<String>>,
    pub luns: Vec<LunSetting>,
    pub acls: Vec<AclSetting>,
    pub port_groups: Vec<PortGroupSetting>,
    /// Whether a config file was read (access is then explicit).
    pub from_file: Option<PathBuf>,
    /// The ACLs were changed through the admin socket: access is explicit
    /// (no ACL: nobody) even without a config file.
    pub explicit_access: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let o = Options::default();
        let l = LoginLimits::default();
        Settings {
            name: Setting::default("srptd".into()),
            id_ext: None,
            ioc_guid: None,
            port: Setting::default(o.port),
            devices: Setting::default(Vec::new()),
            dm: Setting::default(o.dm),
            queue_depth: Setting::default(l.queue_depth),
            max_it_iu_len: Setting::default(l.max_it_iu_len),
            immediate_data: Setting::default(l.immediate_data),
            max_transfer: Setting::default("1M".into()),
            pool_size: Setting::default("32M".into()),
            max_channel_memory: None,
            pollers: None,
            poller_cpus: Setting::default("auto".into()),
            io_threads: Setting::default(o.io_threads as u16),
            io_uring: Setting::default(o.io_uring),
            spin_us: Setting::default(o.spin.as_micros() as u64),
            poller_nice: Setting::default(o.poller_nice),
            software_read_depth: Setting::default(o.software.read_depth),
            software_one_poller: Setting::default(o.software.one_poller),
            srq: Setting::default(o.srq),
            srq_size: None,
            admin_socket: None,
            metrics: None,
            state_dir: None,
            luns: Vec::new(),
            acls: Vec::new(),
            port_groups: Vec::new(),
            from_file: None,
            explicit_access: false,
        }
    }
}

/// Command-line flags that override the file (`None` / empty: not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub luns: Vec<String>,
    pub port: Option<u16>,
    pub devices: Vec<String>,
    pub allow: Vec<String>,
    pub queue_depth: Option<u32>,
    pub max_it_iu_len: Option<u32>,
    pub no_immediate_data: bool,
    pub max_transfer: Option<String>,
    pub pool_size: Option<String>,
    pub max_channel_memory: Option<String>,
    pub pollers: Option<u16>,
    pub poller_cpus: Option<String>,
    pub io_threads: Option<u16>,
    pub no_io_uring: bool,
    pub spin_us: Option<u64>,
    pub poller_nice: Option<i32>,
    pub software_read_depth: Option<u32>,
    pub software_one_poller: bool,
    pub no_dm: bool,
    pub srq: bool,
    pub srq_size: Option<u32>,
    pub admin_socket: Option<String>,
    pub metrics: Option<String>,
    /// `--state-dir DIR`, or `"none"` for `--no-state-dir`.
    pub state_dir: Option<String>,
}

/// Where persistent reservation state lives by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/srptd";

/// What [`Settings::build`] makes: the daemon's options, the SCSI target's
/// configuration, and warnings to log at start.
#[derive(Debug)]
pub struct Loaded {
    pub options: Options,
    pub target: TargetConfig,
    pub warnings: Vec<String>,
}

// ------------------------------------------------------------ the file

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    target: FileTarget,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    data_path: FileDataPath,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default, rename = "lun")]
    luns: Vec<FileLun>,
    #[serde(default, rename = "acl")]
    acls: Vec<FileAcl>,
    #[serde(default, rename = "target_port_group")]
    port_groups: Vec<FilePortGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTarget {
    name: Option<Spanned<String>>,
    id_ext: Option<Spanned<String>>,
    ioc_guid: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    devices: Option<Spanned<Vec<String>>>,
    device_management: Option<Spanned<bool>>,
    state_dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    queue_depth: Option<Spanned<u32>>,
    max_it_iu_len: Option<Spanned<u32>>,
    immediate_data: Option<Spanned<bool>>,
    max_transfer: Option<Spanned<String>>,
    pool_size: Option<Spanned<String>>,
    max_channel_memory: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDataPath {
    pollers: Option<Spanned<u16>>,
    poller_cpus: Option<Spanned<String>>,
    io_threads: Option<Spanned<u16>>,
    io_uring: Option<Spanned<bool>>,
    spin_us: Option<Spanned<u64>>,
    poller_nice: Option<Spanned<i32>>,
    software_read_depth: Option<Spanned<u32>>,
    software_one_poller: Option<Spanned<bool>>,
    srq: Option<Spanned<bool>>,
    srq_size: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    socket: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLun {
    number: Spanned<u16>,
    backstore: Spanned<String>,
    read_only: Option<Spanned<bool>>,
    block_size: Option<Spanned<u32>>,
    serial: Option<Spanned<String>>,
    naa: Option<Spanned<String>>,
    thin: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePortGroup {
    id: Spanned<u16>,
    ports: Spanned<Vec<String>>,
    state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAcl {
    initiator: Spanned<String>,
    luns: Option<Spanned<Vec<FileAclLun>>>,
    read_only: Option<Spanned<bool>>,
    address: Option<Spanned<String>>,
}

/// An element of an ACL's `luns`: `3`, or `{ lun = 3, mapped_lun = 0 }`
/// (LUN 3 seen by this initiator as LUN 0).
#[derive(Debug)]
struct FileAclLun(AclLun);

impl<'de> Deserialize<'de> for FileAclLun {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Unexpected};
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = FileAclLun;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a LUN number or { lun = N, mapped_lun = M }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileAclLun, E> {
                let n = u16::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
                Ok(FileAclLun(AclLun::same(n)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileAclLun, E> {
                let n = u16::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))?;
                Ok(FileAclLun(AclLun::same(n)))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FileAclLun, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Mapping {
                    lun: u16,
                    mapped_lun: Option<u16>,
                }
                let m = Mapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileAclLun(AclLun {
                    lun: m.lun,
                    mapped_lun: m.mapped_lun.unwrap_or(m.lun),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads spans of one file into origins.
struct Lines<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Lines<'_> {
    fn line_of(&self, offset: usize) -> usize {
        1 + self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn setting<T>(&self, key: &str, v: Spanned<T>) -> Setting<T> {
        let line = self.line_of(v.span().start);
        Setting::new(
            v.into_inner(),
            Origin::File {
                path: self.path.to_owned(),
                line,
                key: key.to_owned(),
            },
        )
    }

    fn opt<T>(&self, key: &str, v: Option<Spanned<T>>) -> Option<Setting<T>> {
        v.map(|v| self.setting(key, v))
    }
}

impl Settings {
    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: Origin::Default,
            value: String::new(),
            reason: format!("{}: {e}", path.display()),
        })?;
        Settings::from_toml(path, &text)
    }

    /// Parses the text of a config file (`path` only names it in errors).
    pub fn from_toml(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        let doc: FileDoc = toml::from_str(text).map_err(|e| {
            let lines = Lines { path, text };
            let line = e.span().map_or(0, |s| lines.line_of(s.start));
            let snippet = text.lines().nth(line.saturating_sub(1)).unwrap_or("").trim();
            ConfigError {
                origin: Origin::Default,
                value: String::new(),
                reason: format!(
                    "{}:{line}: {} (`{snippet}`)",
                    path.display(),
                    e.message().trim_end()
                ),
            }
        })?;
        let l = Lines { path, text };
        let mut s = Settings {
            from_file: Some(path.to_owned()),
            ..Settings::default()
        };
        let t = doc.target;
        if let Some(v) = l.opt("target.name", t.name) {
            s.name = v;
        }
        s.id_ext = l.opt("target.id_ext", t.id_ext);
        s.ioc_guid = l.opt("target.ioc_guid", t.ioc_guid);
        if let Some(v) = l.opt("target.port", t.port) {
            s.port = v;
        }
        if let Some(v) = l.opt("target.devices", t.devices) {
            s.devices = v;
        }
        if let Some(v) = l.opt("target.device_management", t.device_management) {
            s.dm = v;
        }
        s.state_dir = l.opt("target.state_dir", t.state_dir);
        let m = doc.limits;
        if let Some(v) = l.opt("limits.queue_depth", m.queue_depth) {
            s.queue_depth = v;
        }
        if let Some(v) = l.opt("limits.max_it_iu_len", m.max_it_iu_len) {
            s.max_it_iu_len = v;
        }
        if let Some(v) = l.opt("limits.immediate_data", m.immediate_data) {
            s.immediate_data = v;
        }
        if let Some(v) = l.opt("limits.max_transfer", m.max_transfer) {
            s.max_transfer = v;
        }
        if let Some(v) = l.opt("limits.pool_size", m.pool_size) {
            s.pool_size = v;
        }
        s.max_channel_memory = l.opt("limits.max_channel_memory", m.max_channel_memory);
        let d = doc.data_path;
        s.pollers = l.opt("data_path.pollers", d.pollers);
        if let Some(v) = l.opt("data_path.poller_cpus", d.poller_cpus) {
            s.poller_cpus = v;
        }
        if let Some(v) = l.opt("data_path.io_threads", d.io_threads) {
            s.io_threads = v;
        }
        if let Some(v) = l.opt("data_path.io_uring", d.io_uring) {
            s.io_uring = v;
        }
        if let Some(v) = l.opt("data_path.spin_us", d.spin_us) {
            s.spin_us = v;
        }
        if let Some(v) = l.opt("data_path.poller_nice", d.poller_nice) {
            s.poller_nice = v;
        }
        if let Some(v) = l.opt("data_path.software_read_depth", d.software_read_depth) {
            s.software_read_depth = v;
        }
        if let Some(v) = l.opt("data_path.software_one_poller", d.software_one_poller) {
            s.software_one_poller = v;
        }
        if let Some(v) = l.opt("data_path.srq", d.srq) {
            s.srq = v;
        }
        s.srq_size = l.opt("data_path.srq_size", d.srq_size);
        s.admin_socket = l.opt("admin.socket", doc.admin.socket);
        s.metrics = l.opt("admin.metrics", doc.admin.metrics);
        s.luns = doc
            .luns
            .into_iter()
            .map(|u| LunSetting {
                number: l.setting("lun.number", u.number),
                backstore: l.setting("lun.backstore", u.backstore),
                read_only: l.opt("lun.read_only", u.read_only),
                block_size: l.opt("lun.block_size", u.block_size),
                serial: l.opt("lun.serial", u.serial),
                naa: l.opt("lun.naa", u.naa),
                thin: l.opt("lun.thin", u.thin),
            })
            .collect();
        s.acls = doc
            .acls
            .into_iter()
            .map(|a| AclSetting {
                initiator: l.setting("acl.initiator", a.initiator),
                luns: l
                    .opt("acl.luns", a.luns)
                    .map(|s| Setting::new(s.value.into_iter().map(|e| e.0).collect(), s.origin)),
                read_only: l.opt("acl.read_only", a.read_only),
                address: l.opt("acl.address", a.address),
            })
            .collect();
        s.port_groups = doc
            .port_groups
            .into_iter()
            .map(|g| PortGroupSetting {
                id: l.setting("target_port_group.id", g.id),
                ports: l.setting("target_port_group.ports", g.ports),
                state: l.opt("target_port_group.state", g.state),
            })
            .collect();
        Ok(s)
    }

    /// Lays command-line flags over these settings: a flag given wins;
    /// `--lun` flags replace the file's LUNs and `--allow` its ACLs.
    pub fn apply(&mut self, f: &Flags) {
        fn set<T: Clone>(dst: &mut Setting<T>, v: &Option<T>, flag: &'static str) {
            if let Some(v) = v {
                *dst = Setting::new(v.clone(), Origin::Flag(flag));
            }
        }
        fn set_opt<T: Clone>(dst: &mut Option<Setting<T>>, v: &Option<T>, flag: &'static str) {
            if let Some(v) = v {
                *dst = Some(Setting::new(v.clone(), Origin::Flag(flag)));
            }
        }
        if !f.luns.is_empty() {
            self.luns = f
                .luns
                .iter()
                .enumerate()
                .map(|(i, spec)| LunSetting {
                    number: Setting::new(i as u16, Origin::Flag("--lun")),
                    backstore: Setting::new(spec.clone(), Origin::Flag("--lun")),
                    read_only: None,
                    block_size: None,
                    serial: None,
                    naa: None,
                    thin: None,
                })
                .collect();
        }
        if !f.allow.is_empty() {
            self.acls = f
                .allow
                .iter()
                .map(|a| AclSetting {
                    initiator: Setting::new(a.clone(), Origin::Flag("--allow")),
                    luns: None,
                    read_only: None,
                    address: None,
                })
                .collect();
        }
        set(&mut self.port, &f.port, "--port");
        if !f.devices.is_empty() {
            self.devices = Setting::new(f.devices.clone(), Origin::Flag("--device"));
        }
        set(&mut self.queue_depth, &f.queue_depth, "--queue-depth");
        set(&mut self.max_it_iu_len, &f.max_it_iu_len, "--max-it-iu-len");
        if f.no_immediate_data {
            self.immediate_data = Setting::new(false, Origin::Flag("--no-immediate-data"));
        }
        set(&mut self.max_transfer, &f.max_transfer, "--max-transfer");
        set(&mut self.pool_size, &f.pool_size, "--pool-size");
        set_opt(
            &mut self.max_channel_memory,
            &f.max_channel_memory,
            "--max-channel-memory",
        );
        set_opt(&mut self.pollers, &f.pollers, "--pollers");
        set(&mut self.poller_cpus, &f.poller_cpus, "--poller-cpus");
        set(&mut self.io_threads, &f.io_threads, "--io-threads");
        set(&mut self.spin_us, &f.spin_us, "--spin-us");
        set(&mut self.poller_nice, &f.poller_nice, "--poller-nice");
        set(
            &mut self.software_read_depth,
            &f.software_read_depth,
            "--software-read-depth",
        );
        if f.software_one_poller {
            self.software_one_poller = Setting::new(true, Origin::Flag("--software-one-poller"));
        }
        if f.no_dm {
            self.dm = Setting::new(false, Origin::Flag("--no-dm"));
        }
        if f.no_io_uring {
            self.io_uring = Setting::new(false, Origin::Flag("--no-io-uring"));
        }
        if f.srq {
            self.srq = Setting::new(true, Origin::Flag("--srq"));
        }
        set_opt(&mut self.srq_size, &f.srq_size, "--srq-size");
        set_opt(&mut self.admin_socket, &f.admin_socket, "--admin-socket");
        set_opt(&mut self.metrics, &f.metrics, "--metrics");
        let flag = if f.state_dir.as_deref() == Some("none") {
            "--no-state-dir"
        } else {
            "--state-dir"
        };
        set_opt(&mut self.state_dir, &f.state_dir, flag);
    }

    /// Checks every setting and builds the daemon's options and the SCSI
    /// target's configuration.
    pub fn build(&self) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let queue_depth = in_bounds(&self.queue_depth, bounds::QUEUE_DEPTH)?;
        let max_it_iu_len = in_bounds(&self.max_it_iu_len, bounds::MAX_IT_IU_LEN)?;
        let max_transfer = size(&self.max_transfer)?;
        let (lo, hi) = bounds::MAX_TRANSFER;
        if max_transfer < lo || max_transfer % 4096 != 0 || max_transfer > hi {
            return err(
                &self.max_transfer.origin,
                &self.max_transfer.value,
                "must be a multiple of 4K between 4K and 64M",
            );
        }
        let pool_size = size(&self.pool_size)?;
        if pool_size < max_transfer || pool_size > bounds::POOL_SIZE_MAX {
            return err(
                &self.pool_size.origin,
                &self.pool_size.value,
                "must be at least the largest transfer (max_transfer) and at most 4G",
            );
        }
        let channel_memory = match &self.max_channel_memory {
            None => None,
            Some(s) => {
                let b = size(s)?;
                if b < pool_size {
                    return err(
                        &s.origin,
                        &s.value,
                        "must be at least one channel's pool (pool_size)",
                    );
                }
                Some(b)
            }
        };
        let pollers = match &self.pollers {
            None => default_pollers(),
            Some(p) => usize::from(in_bounds(p, bounds::POLLERS)?),
        };
        let poller_cpus = self.poller_cpus()?;
        let io_threads = in_bounds(&self.io_threads, bounds::IO_THREADS)?;
        let poller_nice = in_bounds(&self.poller_nice, bounds::POLLER_NICE)?;
        if let Some(s) = &self.srq_size {
            in_bounds(s, bounds::SRQ_SIZE)?;
            if !self.srq.value {
                return err(
                    &s.origin,
                    s.value,
                    "needs the shared receive queue (srq = true / --srq)",
                );
            }
        }
        let identity = match (&self.id_ext, &self.ioc_guid) {
            (None, None) => None,
            (Some(i), None) => {
                let v = guid(i)?;
                Some(TargetPortId {
                    id_ext: v,
                    ioc_guid: v,
                })
            }
            (None, Some(g)) => {
                let v = guid(g)?;
                Some(TargetPortId {
                    id_ext: v,
                    ioc_guid: v,
                })
            }
            (Some(i), Some(g)) => Some(TargetPortId {
                id_ext: guid(i)?,
                ioc_guid: guid(g)?,
            }),
        };
        let admin_socket = match &self.admin_socket {
            None => Some(AdminSocket::default()),
            Some(a) if a.value.is_empty() || a.value == "none" => None,
            Some(a) if !a.value.starts_with('/') => {
                return err(
                    &a.origin,
                    format!("{:?}", a.value),
                    "must be an absolute path, or \"none\"",
                )
            }
            Some(a) => Some(AdminSocket {
                path: a.value.clone().into(),
                explicit: true,
            }),
        };
        let state_dir = match &self.state_dir {
            None => Some(DEFAULT_STATE_DIR.into()),
            Some(d) if d.value == "none" => None,
            Some(d) if !d.value.starts_with('/') => {
                return err(
                    &d.origin,
                    format!("{:?}", d.value),
                    "must be an absolute path, or \"none\"",
                )
            }
            Some(d) => Some(d.value.clone().into()),
        };
        let luns = self.lun_configs()?;
        let (access, mut lun_access) = self.access(&luns, &mut warnings)?;
        let luns = luns
            .into_iter()
            .map(|mut l| {
                if let Some(a) = lun_access.remove(&l.lun) {
                    l.access = a.who.map(Access::Only);
                    l.read_only_for = a.read_only;
                    l.mapped_as = a.mapped_as;
                }
                l
            })
            .collect();
        let peers = self.peer_filter()?;
        let target = TargetConfig {
            name: self.name.value.clone(),
            luns,
            access,
            peers,
            max_transfer_bytes: max_transfer as u32,
            state_dir,
            port_groups: self.port_groups()?,
            ..TargetConfig::default()
        };
        let options = Options {
            port: self.port.value,
            devices: self.devices.value.clone(),
            identity,
            limits: LoginLimits {
                max_it_iu_len,
                queue_depth,
                immediate_data: self.immediate_data.value,
                ..LoginLimits::default()
            },
            pool_size: pool_size as usize,
            pollers,
            poller_cpus,
            io_threads: usize::from(io_threads),
            io_uring: self.io_uring.value,
            spin: Duration::from_micros(self.spin_us.value),
            poller_nice,
            software: crate::driver::SoftwareDevice {
                read_depth: self.software_read_depth.value,
                one_poller: self.software_one_poller.value,
            },
            dm: self.dm.value,
            srq: self.srq.value,
            srq_size: self.srq_size.as_ref().map(|s| s.value),
            channel_memory,
            admin_socket,
            metrics: metrics_addr(&self.metrics)?,
            ..Options::default()
        };
        Ok(Loaded {
            options,
            target,
            warnings,
        })
    }

    /// The pollers' CPUs; a listed CPU must be one srptd may run on.
    fn poller_cpus(&self) -> Result<PollerCpus, ConfigError> {
        let s = &self.poller_cpus;
        let cpus = PollerCpus::parse(&s.value).or_else(|e| err(&s.origin, &s.value, e))?;
        let allowed = crate::os::allowed_cpus().unwrap_or_default();
        match cpus.not_allowed(&allowed) {
            Some(c) if !allowed.is_empty() => err(
                &s.origin,
                &s.value,
                format!("CPU {c} is not one srptd may run on ({allowed:?})"),
            ),
            _ => Ok(cpus),
        }
    }

    /// The target port groups, checked (`scsi::alua::check_groups`).
    fn port_groups(&self) -> Result<Vec<PortGroupConfig>, ConfigError> {
        let mut out = Vec::with_capacity(self.port_groups.len());
        for g in &self.port_groups {
            let state = match &g.state {
                None => AccessState::ActiveOptimized,
                Some(s) => match AccessState::parse(&s.value) {
                    Some(a) => a,
                    None => {
                        let names: Vec<&str> = AccessState::ALL.iter().map(|a| a.name()).collect();
                        return err(
                            &s.origin,
                            format!("{:?}", s.value),
                            format!("must be one of {}", names.join(", ")),
                        );
                    }
                },
            };
            out.push(PortGroupConfig {
                id: g.id.value,
                ports: g.ports.value.clone(),
                state,
            });
        }
        if let Err(e) = check_groups(&out) {
            let g = &self.port_groups[e.group];
            return match e.field {
                GroupField::Id => err(&g.id.origin, g.id.value, e.reason),
                GroupField::Ports => err(&g.ports.origin, format!("{:?}", g.ports.value), e.reason),
                GroupField::Port(j) => err(&g.ports.origin, format!("{:?}", g.ports.value[j]), e.reason),
            };
        }
        Ok(out)
    }

    /// The LUNs (default: one `ram:256M`), numbers unique and in range.
    fn lun_configs(&self) -> Result<Vec<LunConfig>, ConfigError> {
        if self.luns.is_empty() {
            if self.from_file.is_some() {
                return Ok(Vec::new());
            }
            let bs = BackstoreConfig::parse("ram:256M", "--lun").map_err(|e| ConfigError {
                origin: Origin::Default,
                value: String::new(),
                reason: e.to_string(),
            })?;
            return Ok(vec![LunConfig::new(0, bs)]);
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.luns.len());
        for u in &self.luns {
            let n = &u.number;
            if n.value > MAX_LUN {
                return err(&n.origin, n.value, format!("LUN numbers go from 0 to {MAX_LUN}"));
            }
            if !seen.insert(n.value) {
                return err(&n.origin, n.value, "this LUN number is already used");
            }
            let b = &u.backstore;
            let mut bs = BackstoreConfig::parse(&b.value, "backstore").map_err(|e| ConfigError {
                origin: b.origin.clone(),
                value: format!("{:?}", b.value),
                reason: e.to_string(),
            })?;
            if let Some(ro) = &u.read_only {
                bs.read_only = ro.value;
            }
            if let Some(s) = &u.block_size {
                if s.value != 512 && s.value != 4096 {
                    return err(&s.origin, s.value, "must be 512 or 4096");
                }
                bs.block_size = s.value;
            }
            let mut l = LunConfig::new(n.value, bs);
            if let Some(s) = &u.serial {
                if !lun::valid_serial(&s.value) {
                    return err(&s.origin, format!("{:?}", s.value), lun::SERIAL_RULE);
                }
                l.serial = Some(s.value.clone());
            }
            if let Some(n) = &u.naa {
                let v = parse_hex::<16>(n.value.trim_start_matches("0x")).filter(lun::valid_naa);
                let Some(v) = v else {
                    return err(&n.origin, format!("{:?}", n.value), lun::NAA_RULE);
                };
                if out.iter().any(|o: &LunConfig| o.naa == Some(v)) {
                    return err(
                        &n.origin,
                        format!("{:?}", n.value),
                        "another LUN has this NAA identifier",
                    );
                }
                l.naa = Some(v);
            }
            if let Some(t) = &u.thin {
                l.thin = t.value;
            }
            out.push(l);
        }
        Ok(out)
    }
}

impl Settings {
    /// An error of the SCSI target built from these settings (a backstore
    /// that does not open, at start or when a change or reload adds it),
    /// named by the setting it came from: the file and line of the LUN's
    /// `backstore`, or the flag or parameter.
    pub fn target_error(&self, e: &crate::scsi::ConfigError) -> ConfigError {
        // The target names a LUN by its place in the configuration
        // (`luns[1].backstore.path`), the order of `self.luns`.
        let lun = e.field().strip_prefix("luns[").and_then(|r| r.split_once(']'));
        let at = lun.and_then(|(i, rest)| Some((self.luns.get(i.parse::<usize>().ok()?)?, rest)));
        let Some((l, rest)) = at else {
            return ConfigError {
                origin: Origin::Default,
                value: String::new(),
                reason: e.to_string(),
            };
        };
        let text = |s: &Setting<String>| (s.origin.clone(), format!("{:?}", s.value));
        let (origin, value) = match rest.split('.').nth(1) {
            Some("serial") => l.serial.as_ref().map_or_else(|| text(&l.backstore), text),
            Some("naa") => l.naa.as_ref().map_or_else(|| text(&l.backstore), text),
            Some("lun") => (l.number.origin.clone(), l.number.value.to_string()),
            _ => text(&l.backstore),
        };
        ConfigError {
            origin,
            value,
            reason: e.reason(),
        }
    }

    /// Checks that the RDMA devices to serve exist (`available`: the
    /// machine's).
    pub fn check_devices(&self, available: &[String]) -> Result<(), ConfigError> {
        for d in &self.devices.value {
            if !available.contains(d) {
                return err(
                    &self.devices.origin,
                    format!("{d:?}"),
                    format!("no such RDMA device (available: {})", available.join(", ")),
                );
            }
        }
        Ok(())
    }
}

fn in_bounds<T: PartialOrd + Copy + fmt::Display>(
    s: &Setting<T>,
    (lo, hi): (T, T),
) -> Result<T, ConfigError> {
    if s.value < lo || s.value > hi {
        return err(&s.origin, s.value, format!("must be between {lo} and {hi}"));
    }
    Ok(s.value)
}

fn size(s: &Setting<String>) -> Result<u64, ConfigError> {
    parse_size(&s.value).map_or_else(|| err(&s.origin, &s.value, "not a size (e.g. 512K, 1M, 2G)"), Ok)
}

/// A 64-bit identifier: 16 hex digits, with an optional `0x` and colons
/// (`0002:c903:0001:0001`, the sysfs GUID form).
fn guid(s: &Setting<String>) -> Result<u64, ConfigError> {
    let hex: String = s
        .value
        .trim_start_matches("0x")
        .chars()
        .filter(|&c| c != ':')
        .collect();
    match parse_hex::<8>(&hex) {
        Some(b) => Ok(u64::from_be_bytes(b)),
        None => err(
            &s.origin,
            format!("{:?}", s.value),
            "expected 16 hex digits (e.g. 0002c90300010001)",
        ),
    }
}

/// Reads the config file (if any), lays the flags over it and checks the
/// result.
pub fn load(path: Option<&Path>, flags: &Flags) -> Result<Loaded, ConfigError> {
    read(path, flags)?.build()
}

/// Reads the config file (if any) and lays the flags over it, unchecked.
pub fn read(path: Option<&Path>, flags: &Flags) -> Result<Settings, ConfigError> {
    let mut s = match path {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    s.apply(flags);
    Ok(s)
}

mod access;
mod live;
mod save;
pub use access::AclLun;
pub use live::{Change, LiveConfig, Reloaded};

/// The metrics listener's address: `HOST:PORT` (`[::1]:9469` for IPv6),
/// or a bare port, which listens on 127.0.0.1.
fn metrics_addr(m: &Option<Setting<String>>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let Some(m) = m else { return Ok(None) };
    let v = m.value.trim();
    if v.is_empty() || v == "none" {
        return Ok(None);
    }
    if let Ok(port) = v.parse::<u16>() {
        return Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))));
    }
    match v.parse() {
        Ok(a) => Ok(Some(a)),
        Err(_) => err(
            &m.origin,
            format!("{:?}", m.value),
            "must be an IP address and port such as 127.0.0.1:9469 (or a port, on 127.0.0.1), or \"none\"",
        ),
    }
}

#[cfg(test)]
mod acl_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;
