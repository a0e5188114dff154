//! The running daemon: RDMA/CM listeners and connection management on a
//! small tokio runtime (control plane), channels on poller threads (data
//! path).
//!
//! Listeners: one wildcard IPv6/IPv4 RDMA/CM listener on the configured
//! port (it follows devices as they come and go), and on every InfiniBand
//! port of a served device one in the IB port space (`AF_IB`, service ID
//! [`ib_service_id`]) for IB CM logins. A device that goes away
//! (DEVICE_REMOVAL) has its channels drained and freed, then its PD, MRs and
//! SRQ, so that the kernel can finish removing it; other devices keep
//! serving.
//!
//! Module map:
//! - this file: the entry point [`run`], [`Options`], [`Summary`],
//!   [`StartError`];
//! - `control`: the control loop on the tokio runtime (CM events, poller
//!   events, signals, ticks, shutdown);
//! - `listen`: the wildcard and IB port-space listeners, IB port scanning;
//! - `devices`: devices in use: opened at first login, removal, release;
//! - `login`: login acceptance, a pipeline of named steps;
//! - `conns`: the table of accepted connections (by CM id, key, nexus);
//! - [`poller`]: poller threads (data path) and their spin policy;
//! - [`channel`]: one channel's driver on a poller ([`channel::ChannelDriver`]);
//! - [`device`]: one device's resources and its shared receive queue ring;
//! - [`dm`]: the device-management (DevMgt MAD) service.

mod admin;
mod admin_change;
pub mod channel;
mod conns;
mod control;
pub mod device;
mod devices;
pub mod dm;
mod listen;
mod login;
mod metrics;
mod notify;
pub mod poller;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;

use crate::proto::{ChannelStats, LoginLimits, TargetPortId};
use crate::rdma::{self, EventChannel};
use crate::scsi::Target;

use control::Control;
use listen::{listen_ip, Listeners};
use poller::PollerConfig;

pub use admin::{AdminSocket, DEFAULT_SOCKET as DEFAULT_ADMIN_SOCKET};
pub use listen::{ib_listen_addr, ib_service_id};
pub use login::{rdma_read_depth, SoftwareDevice, SOFTWARE_READ_DEPTH};

/// Everything the target needs to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// RDMA/CM port to listen on.
    pub port: u16,
    /// Devices to serve (empty: all).
    pub devices: Vec<String>,
    /// The identity initiators use (`None`: the node GUID of the first
    /// device served, see [`identity`]). Set it to keep add_target strings
    /// valid when an HCA is replaced.
    pub identity: Option<TargetPortId>,
    /// Login limits offered to every channel.
    pub limits: LoginLimits,
    /// Data pool per channel, bytes.
    pub pool_size: usize,
    /// Poller threads.
    pub pollers: usize,
    /// Which CPU each poller is bound to.
    pub poller_cpus: PollerCpus,
    /// Worker threads per poller for blocking backstore I/O.
    pub io_threads: usize,
    /// File and block LUNs' reads, writes and flushes on each poller's
    /// io_uring (where the kernel allows it).
    pub io_uring: bool,
    /// Busy-poll time after the last completion before sleeping.
    pub spin: Duration,
    /// The poller threads' nice value ([`poller::PollerConfig::nice`]).
    pub poller_nice: i32,
    /// How channels on software RDMA devices run.
    pub software: SoftwareDevice,
    /// How long a clean shutdown waits for initiators to log out.
    pub shutdown_timeout: Duration,
    /// Answer device-management MADs on the served ports (`dm::DmService`).
    pub dm: bool,
    /// One shared receive queue per device instead of a receive queue per
    /// channel.
    pub srq: bool,
    /// Receive slots of each device's SRQ (`None`: derived, see
    /// [`device::srq_slots`]).
    pub srq_size: Option<u32>,
    /// Memory all channels together may take (receive and send rings,
    /// data and table pools); a login beyond it is rejected with
    /// INSUFFICIENT RESOURCES instead of running the host out of memory.
    /// `None`: half of the memory available when srptd starts
    /// ([`default_channel_memory`]).
    pub channel_memory: Option<u64>,
    /// The admin socket (JSON-RPC, `srptd ctl`); `None`: no socket.
    pub admin_socket: Option<AdminSocket>,
    /// The Prometheus listener (`GET /metrics`); `None`: none (default).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Half of `MemAvailable` in `/proc/meminfo`, at least 256 MiB (256 MiB if
/// it cannot be read): the default budget of all channels' memory.
pub fn default_channel_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    channel_memory_from(&meminfo)
}

/// [`default_channel_memory`] from the text of `/proc/meminfo`.
fn channel_memory_from(meminfo: &str) -> u64 {
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    available.map_or(256 << 20, |b| (b / 2).max(256 << 20))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 5555,
            devices: Vec::new(),
            identity: None,
            limits: LoginLimits::default(),
            pool_size: 32 << 20,
            channel_memory: None,
            pollers: default_pollers(),
            poller_cpus: PollerCpus::Auto,
            io_threads: 4,
            io_uring: true,
            spin: Duration::from_micros(50),
            poller_nice: DEFAULT_POLLER_NICE,
            software: SoftwareDevice::default(),
            shutdown_timeout: Duration::from_secs(10),
            dm: true,
            srq: false,
            srq_size: None,
            admin_socket: Some(AdminSocket::default()),
            metrics: None,
        }
    }
}

/// Which CPU each poller thread is bound to (`data_path.poller_cpus`).
/// A poller bound to a CPU keeps the channels it serves, their completion
/// wake-ups and their soft-RoCE work on that CPU's caches; an unbound one
/// is moved around by the scheduler (measured in docs/performance.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PollerCpus {
    /// Poller `i` on the `i`-th CPU srptd may use, if there are no more
    /// pollers than such CPUs (as by default); otherwise none is bound.
    #[default]
    Auto,
    /// No poller is bound: the scheduler places them.
    Unbound,
    /// Poller `i` on `cpus[i % cpus.len()]`.
    List(Vec<usize>),
}

impl PollerCpus {
    /// `auto`, `none`, or CPUs and ranges: `0,2,4-7`.
    pub fn parse(s: &str) -> Result<PollerCpus, String> {
        match s.trim() {
            "auto" => return Ok(PollerCpus::Auto),
            "none" => return Ok(PollerCpus::Unbound),
            _ => {}
        }
        let num = |t: &str| {
            t.trim().parse::<usize>().map_err(|_| {
                format!("{t:?} is not a CPU number (expected auto, none or a list like 0,2,4-7)")
            })
        };
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if lo > hi || hi >= crate::os::CPU_SET_CAPACITY {
                return Err(format!("{part:?} is not a range of CPUs"));
            }
            cpus.extend(lo..=hi);
        }
        Ok(PollerCpus::List(cpus))
    }

    /// The CPU poller `i` of `n` is bound to, given the CPUs srptd may use.
    pub fn cpu_of(&self, i: usize, n: usize, allowed: &[usize]) -> Option<usize> {
        match self {
            PollerCpus::Auto if n <= allowed.len() => allowed.get(i).copied(),
            PollerCpus::Auto | PollerCpus::Unbound => None,
            PollerCpus::List(cpus) => cpus.get(i % cpus.len().max(1)).copied(),
        }
    }

    /// The first CPU of a list that srptd may not use.
    pub fn not_allowed(&self, allowed: &[usize]) -> Option<usize> {
        match self {
            PollerCpus::List(cpus) => cpus.iter().copied().find(|c| !allowed.contains(c)),
            _ => None,
        }
    }
}

/// Poller threads by default: one per CPU the process may run on, at most
/// [`MAX_DEFAULT_POLLERS`]. An idle poller sleeps, so spare ones cost
/// nothing; channels go to the least loaded one.
pub fn default_pollers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_DEFAULT_POLLERS)
}

/// Upper bound of [`default_pollers`].
pub const MAX_DEFAULT_POLLERS: usize = 8;

/// The pollers' nice value by default: the process's own. A higher value
/// lets work sharing their CPUs run first (fewer wake-ups and doorbells
/// per command in the VM benchmark, no clear gain against the kernel
/// target there: docs/performance.md).
pub const DEFAULT_POLLER_NICE: i32 = 0;

/// Why the target could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no RDMA device found (load rdma_rxe and create one with `rdma link add rxe0 type rxe netdev <if>`, or see the README)")]
    NoDevice,
    #[error("RDMA device {0:?}: no such device (available: {1})")]
    UnknownDevice(String, String),
    #[error("cannot listen on RDMA/CM port {port}: {source}")]
    Listen { port: u16, source: rdma::Error },
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {source}")]
    AdminSocket { path: String, source: std::io::Error },
    #[error("{0}")]
    Rdma(#[from] rdma::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Totals printed when the target stops.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Logins accepted.
    pub logins: u64,
    /// Logins rejected.
    pub rejects: u64,
    /// Channels still open at exit (resources not freed).
    pub leaked_channels: usize,
    /// Shared receive queue slots neither posted nor owned by a channel at
    /// exit (or when their device went away).
    pub leaked_srq_slots: u64,
    /// Sum of the channels' counters.
    pub stats: ChannelStats,
    /// Times the pollers went to sleep (woken by a completion event, a
    /// control message or a backstore completion).
    pub poller_sleeps: u64,
    /// `ibv_post_send` calls (each a doorbell system call on soft-RoCE).
    pub doorbells: u64,
    /// Commands whose backstore I/O ran on the pollers' io_uring, and the
    /// `io_uring_enter` calls that submitted them.
    pub uring_commands: u64,
    pub uring_enters: u64,
    /// Commands on RBD LUNs submitted to librbd by the pollers.
    pub rbd_commands: u64,
    /// Commands run on the worker pools.
    pub worker_jobs: u64,
}

/// The identity initiators use: `id_ext` and `ioc_guid` are the node GUID of
/// the first device served, as the kernel target does.
pub fn identity(devices: &[String]) -> Result<(TargetPortId, Vec<String>), StartError> {
    let all = rdma::devices()?;
    if all.is_empty() {
        return Err(StartError::NoDevice);
    }
    let names: Vec<String> = all.iter().map(|d| d.name.clone()).collect();
    for d in devices {
        if !names.contains(d) {
            return Err(StartError::UnknownDevice(d.clone(), names.join(", ")));
        }
    }
    let first = devices.first().cloned().unwrap_or_else(|| names[0].clone());
    let guid = all
        .iter()
        .find(|d| d.name == first)
        .map(|d| d.guid)
        .unwrap_or_default();
    let served = if devices.is_empty() {
        names
    } else {
        devices.to_vec()
    };
    Ok((
        TargetPortId {
            id_ext: guid,
            ioc_guid: guid,
        },
        served,
    ))
}

/// Runs the target until SIGINT/SIGTERM; prints the `ready` line when it
/// accepts logins.
///
/// `live` holds the settings `opts` and `target` came from; admin calls
/// change them.
pub fn run(
    mut opts: Options,
    target: Arc<Target>,
    live: crate::config::LiveConfig,
) -> Result<Summary, StartError> {
    let (found, served) = identity(&opts.devices)?;
    let port_id = opts.identity.unwrap_or(found);
    let budget = *opts.channel_memory.get_or_insert_with(default_channel_memory);
    tracing::info!(
        bytes = budget,
        per_channel_pool = opts.pool_size,
        "channel memory budget (--max-channel-memory)"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (ev_tx, ev_rx) = unbounded_channel();
        let io_queue = (opts.limits.queue_depth as usize + 8) * 64;
        let n = opts.pollers.max(1);
        let allowed = crate::os::allowed_cpus().unwrap_or_default();
        let cpus: Vec<Option<usize>> = (0..n).map(|i| opts.poller_cpus.cpu_of(i, n, &allowed)).collect();
        if cpus.iter().any(Option::is_some) {
            tracing::info!(?cpus, "pollers bound to CPUs (data_path.poller_cpus)");
        }
        let pollers = cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| {
                let pcfg = PollerConfig {
                    spin: opts.spin,
                    nice: opts.poller_nice,
                    io_threads: opts.io_threads,
                    io_uring: opts.io_uring,
                    io_queue,
                    cpu,
                };
                poller::spawn(i, pcfg, ev_tx.clone())
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let events = EventChannel::new()?;
        let listener = listen_ip(&events, opts.port).map_err(|source| StartError::Listen {
            port: opts.port,
            source,
        })?;
        let port = opts.port;
        let dm = dm::DmService::for_target(&opts, &target, port_id, &served);
        let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(16);
        if let Some(addr) = opts.metrics {
            let l = metrics::bind(addr)
                .await
                .map_err(|source| StartError::Metrics { addr, source })?;
            tracing::info!(%addr, "metrics listener (GET /metrics)");
            tokio::spawn(metrics::serve(l, admin_tx.clone()));
        }
        let admin_path = match opts.admin_socket.clone() {
            None => None,
            Some(a) => match admin::bind(&a.path) {
                Ok(l) => {
                    tracing::info!(path = %a.path.display(), "admin socket");
                    tokio::spawn(admin::serve(l, a.path.clone(), admin_tx));
                    Some(a.path)
                }
                Err(source) if a.explicit => {
                    return Err(StartError::AdminSocket {
                        path: a.path.display().to_string(),
                        source,
                    })
                }
                Err(e) => {
                    tracing::warn!(path = %a.path.display(), error = %e, "no admin socket (srptd ctl will not reach this srptd)");
                    None
                }
            },
        };
        let mut c = Control::new(opts, target, port_id, events, pollers, Listeners::new(listener), live);
        c.scan_ib_ports(&served);
        tracing::info!(
            port,
            srq = c.opts.srq,
            ib_listeners = c.listeners.ib_count(),
            devices = ?served,
            "listening"
        );
        println!(
            "ready id_ext={:016x} ioc_guid={:016x} port={}",
            port_id.id_ext, port_id.ioc_guid, port
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        c.notify_ready();
        let result = c.main_loop(ev_rx, admin_rx).await;
        if let Some(p) = admin_path {
            let _ = std::fs::remove_file(p);
        }
        dm.stop().await;
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poller_cpus_parse() {
        assert_eq!(PollerCpus::parse("auto"), Ok(PollerCpus::Auto));
        assert_eq!(PollerCpus::parse("none"), Ok(PollerCpus::Unbound));
        assert_eq!(
            PollerCpus::parse("0,2,4-6"),
            Ok(PollerCpus::List(vec![0, 2, 4, 5, 6]))
        );
        assert_eq!(PollerCpus::parse(" 3 "), Ok(PollerCpus::List(vec![3])));
        for bad in ["", "x", "1,", "3-1", "0-5000", "-1", "1-"] {
            assert!(PollerCpus::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn poller_cpus_bind_each_poller() {
        let allowed = [2, 3, 5];
        // One poller per allowed CPU, in order; more pollers than CPUs: none.
        let auto: Vec<_> = (0..3).map(|i| PollerCpus::Auto.cpu_of(i, 3, &allowed)).collect();
        assert_eq!(auto, [Some(2), Some(3), Some(5)]);
        assert_eq!(PollerCpus::Auto.cpu_of(0, 2, &allowed), Some(2));
        assert_eq!(PollerCpus::Auto.cpu_of(0, 4, &allowed), None);
        assert_eq!(PollerCpus::Unbound.cpu_of(0, 1, &allowed), None);
        // A list is used round robin.
        let list = PollerCpus::List(vec![5, 2]);
        let bound: Vec<_> = (0..3).map(|i| list.cpu_of(i, 3, &allowed)).collect();
        assert_eq!(bound, [Some(5), Some(2), Some(5)]);
        assert_eq!(list.not_allowed(&allowed), None);
        assert_eq!(PollerCpus::List(vec![2, 4]).not_allowed(&allowed), Some(4));
        assert_eq!(PollerCpus::Auto.not_allowed(&[]), None);
    }

    #[test]
    fn channel_memory_is_half_of_what_is_available() {
        let m = "MemTotal:        2014976 kB\nMemFree:          120000 kB\nMemAvailable:    1600000 kB\n";
        assert_eq!(channel_memory_from(m), 800_000 * 1024);
        // At least 256 MiB; 256 MiB when unreadable.
        assert_eq!(channel_memory_from("MemAvailable: 1000 kB\n"), 256 << 20);
        assert_eq!(channel_memory_from(""), 256 << 20);
        assert_eq!(channel_memory_from("MemAvailable: lots\n"), 256 << 20);
    }

    #[test]
    fn srq_is_off_by_default() {
        let o = Options::default();
        assert!(!o.srq && o.srq_size.is_none());
        assert_eq!(o.port, 5555);
    }
}
