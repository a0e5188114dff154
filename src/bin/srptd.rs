//! `srptd`: run the SRP target; `srptd dm-query`: query a port's
//! device-management agent.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use srptd::config::{self, Flags};
use srptd::driver;
use srptd::mad::query::standard_probes;
use srptd::mad::render::probe_line;
use srptd::mad::session::{probe, query_with, QueryError, QueryOptions};
use srptd::scsi::Target;
use srptd::wire::parse_hex;

/// A userspace SCSI RDMA Protocol (SRP) target.
///
/// Without a subcommand, runs the target with the options below.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML; see contrib/srptd.toml). The flags below
    /// override what it sets. With a file, access is explicit: only its
    /// [[acl]] entries (or --allow) let initiators in.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A LUN backstore, numbered in order from 0: `ram:<size>`,
    /// `file:<path>` or `rbd:<pool>/<image>[,conf=PATH][,id=NAME]` (Ceph),
    /// with options `,ro` and `,bs=512|4096`, and for files `,buffered`
    /// (through the host's page cache instead of O_DIRECT) (e.g.
    /// `ram:256M`, `file:/srv/disk.img,ro`,
    /// `rbd:rbd/disk1,conf=/etc/ceph/ceph.conf`).
    /// Replaces the config file's LUNs. Default without a file: one
    /// `ram:256M`.
    #[arg(long = "lun", value_name = "SPEC")]
    luns: Vec<String>,
    /// Directory for persistent reservations kept across restarts (APTPL):
    /// one file per LUN, `pr-<NAA id>.state`, created on first use
    /// [default: /var/lib/srptd].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<String>,
    /// Do not keep persistent reservations across restarts: APTPL is then
    /// refused (PTPL_C = 0) and the state directory is not used.
    #[arg(long, conflicts_with = "state_dir")]
    no_state_dir: bool,
    /// RDMA/CM port to listen on [default: 5555].
    #[arg(long)]
    port: Option<u16>,
    /// RDMA device to serve (repeatable; default: all).
    #[arg(long = "device", value_name = "NAME")]
    devices: Vec<String>,
    /// Initiator allowed to log in: `ANY`, or a 32-hex-digit initiator port
    /// id (repeatable). Replaces the config file's ACLs. Default without a
    /// file: ANY.
    #[arg(long = "allow", value_name = "ANY|ID")]
    allow: Vec<String>,
    /// Credits (request limit) granted per channel, 1-4096 [default: 128].
    #[arg(long)]
    queue_depth: Option<u32>,
    /// Largest request IU a login may ask for, in bytes, 64-1048576
    /// [default: 65604].
    #[arg(long)]
    max_it_iu_len: Option<u32>,
    /// Do not offer immediate data.
    #[arg(long)]
    no_immediate_data: bool,
    /// Largest data transfer of one command, a multiple of 4K up to 64M
    /// [default: 1M].
    #[arg(long)]
    max_transfer: Option<String>,
    /// Data buffer pool per channel [default: 32M].
    #[arg(long)]
    pool_size: Option<String>,
    /// Memory all channels together may take (rings and pools, e.g. 2G);
    /// logins beyond it are rejected with INSUFFICIENT RESOURCES.
    /// Default: half of the memory available at start.
    #[arg(long)]
    max_channel_memory: Option<String>,
    /// Poller threads (data path), 1-64; each channel runs on the least
    /// loaded one. Default: one per CPU srptd may use, at most 8.
    #[arg(long)]
    pollers: Option<u16>,
    /// CPUs the pollers are bound to: a list like 0,2,4-7 (poller i on
    /// the i-th, round robin), none, or auto: poller i on the i-th CPU
    /// srptd may use when there are no more pollers than CPUs [default:
    /// auto].
    #[arg(long, value_name = "auto|none|LIST")]
    poller_cpus: Option<String>,
    /// Worker threads per poller for file I/O, 1-256 [default: 4].
    #[arg(long)]
    io_threads: Option<u16>,
    /// Microseconds to keep polling after the last completion before
    /// sleeping [default: 50].
    #[arg(long)]
    spin_us: Option<u64>,
    /// The poller threads' nice value, -20 to 19: above 0 other work on
    /// a poller's CPU (a co-located initiator, soft-RoCE) runs first and
    /// the poller then handles more commands per wake-up; below 0 needs
    /// CAP_SYS_NICE [default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    poller_nice: Option<i32>,
    /// RDMA READs a channel on a software RDMA device (rxe, siw) keeps in
    /// flight at most; 0: the device's own limit [default: 1]. One READ
    /// at a time keeps soft-RoCE from retrying commands (docs/stalls.md).
    #[arg(long, value_name = "N")]
    software_read_depth: Option<u32>,
    /// Run all channels of a software RDMA device (rxe, siw) on one poller
    /// instead of spreading them like a hardware device's: a further guard
    /// against soft-RoCE retries that halves throughput (docs/stalls.md).
    #[arg(long)]
    software_one_poller: bool,
    /// Do not answer InfiniBand device-management MADs (IOUnitInfo,
    /// IOControllerProfile, ServiceEntries) on the served ports.
    #[arg(long)]
    no_dm: bool,
    /// Run file and block LUNs' I/O on the worker threads (--io-threads)
    /// instead of each poller's io_uring.
    #[arg(long)]
    no_io_uring: bool,
    /// One shared receive queue per RDMA device for all its channels,
    /// instead of a receive queue and ring per channel. Immediate data
    /// works in both modes.
    #[arg(long)]
    srq: bool,
    /// Receive slots of each shared receive queue (with --srq), 1-65536.
    /// Default: 4096, fewer if slots of --max-it-iu-len would take more
    /// than 64 MiB; always at most the device's max_srq_wr.
    #[arg(long, value_name = "SLOTS")]
    srq_size: Option<u32>,
    /// The admin socket for `srptd ctl` (JSON-RPC), or `none`
    /// [default: /run/srptd/srptd.sock].
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g.
    /// 127.0.0.1:9469 (a bare port listens on 127.0.0.1) [default: none].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl Cli {
    fn flags(&self) -> Flags {
        Flags {
            luns: self.luns.clone(),
            port: self.port,
            devices: self.devices.clone(),
            allow: self.allow.clone(),
            queue_depth: self.queue_depth,
            max_it_iu_len: self.max_it_iu_len,
            no_immediate_data: self.no_immediate_data,
            max_transfer: self.max_transfer.clone(),
            pool_size: self.pool_size.clone(),
            max_channel_memory: self.max_channel_memory.clone(),
            pollers: self.pollers,
            poller_cpus: self.poller_cpus.clone(),
            io_threads: self.io_threads,
            spin_us: self.spin_us,
            poller_nice: self.poller_nice,
            software_read_depth: self.software_read_depth,
            software_one_poller: self.software_one_poller,
            no_dm: self.no_dm,
            no_io_uring: self.no_io_uring,
            srq: self.srq,
            srq_size: self.srq_size,
            admin_socket: self.admin_socket.clone(),
            metrics: self.metrics.clone(),
            state_dir: if self.no_state_dir {
                Some("none".into())
            } else {
                self.state_dir.clone()
            },
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running srptd through its admin socket (JSON-RPC): status,
    /// sessions, LUNs, counters; log a session out.
    Ctl(CtlArgs),
    /// Ask the device-management agent of a port (srptd's or the kernel's
    /// ib_srpt) what it advertises, like srp_daemon does, and print the
    /// decoded answers and the add_target string(s) they make.
    DmQuery(DmQueryArgs),
}

#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// The admin socket.
    #[arg(long, global = true, default_value = srptd::driver::DEFAULT_ADMIN_SOCKET)]
    socket: PathBuf,
    /// Print the JSON result instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Identity, devices, LUN and session counts, memory, logins.
    Status,
    /// Every I_T nexus and its channels: peer, commands in flight,
    /// credits, counters.
    Sessions,
    /// Every LUN: backstore, size, block size, read-only, serial.
    Luns,
    /// Target-wide counters.
    Stats,
    /// Log an initiator's session out (SRP_T_LOGOUT on each channel).
    Logout {
        /// The initiator port ID (32 hex digits, as `sessions` shows it).
        initiator: String,
    },
    /// Add, remove, resize or write-protect a LUN while it is served.
    #[command(subcommand)]
    Lun(LunCommand),
    /// Change who may log in and which LUNs each initiator sees.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Write the configuration in effect as a config file (atomically).
    SaveConfig {
        /// Where (default: the file srptd was started with).
        path: Option<PathBuf>,
    },
    /// Read the config file again and apply the difference (as SIGHUP).
    Reload,
    /// Target port groups (ALUA): list them, or set one's state.
    Alua {
        #[command(subcommand)]
        action: Option<AluaCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum AluaCommand {
    /// Put a target port group in a state; every session gets ASYMMETRIC
    /// ACCESS STATE CHANGED.
    Set {
        group: u16,
        /// active/optimized, active/non-optimized, standby, unavailable or
        /// transitioning.
        state: String,
    },
}

#[derive(Debug, Subcommand)]
enum LunCommand {
    /// Add a LUN; initiators get REPORTED LUNS DATA HAS CHANGED.
    Add {
        /// LUN number (0-16383).
        number: u16,
        /// `ram:<size>`, `file:<path>` or `rbd:<pool>/<image>`.
        backstore: String,
        /// Write-protected (DATA PROTECT on writes).
        #[arg(long)]
        read_only: bool,
        /// Logical block size: 512 (default) or 4096.
        #[arg(long)]
        block_size: Option<u32>,
        /// Unit serial number (default derived from the path, or the target
        /// name and LUN number for RAM).
        #[arg(long)]
        serial: Option<String>,
        /// NAA identifier (32 hex digits starting with 6).
        #[arg(long)]
        naa: Option<String>,
        /// No logical block provisioning (UNMAP refused, LBPME = 0).
        #[arg(long)]
        thick: bool,
    },
    /// Remove a LUN (its file is flushed first).
    Remove { number: u16 },
    /// Set a file LUN's size (a block device's: read it again);
    /// initiators get CAPACITY DATA HAS CHANGED.
    Resize {
        number: u16,
        /// New size, e.g. 2G (not for block devices).
        size: Option<String>,
    },
    /// Turn write protection on or off.
    ReadOnly {
        number: u16,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Let an initiator log in (ANY: everyone).
    Add {
        /// `ANY` or the 32-hex-digit initiator port ID.
        initiator: String,
        /// The LUNs it sees (default: all), e.g. 0,2.
        #[arg(long, value_delimiter = ',')]
        luns: Option<Vec<u16>>,
        /// It sees its LUNs write-protected.
        #[arg(long)]
        read_only: bool,
        /// RDMA/CM logins only from this address or network (10.0.0.0/24).
        #[arg(long)]
        address: Option<String>,
    },
    /// Remove an initiator's ACL (its session stays until it logs out).
    Remove { initiator: String },
    /// Let an initiator see one more LUN (--as: under another number), or
    /// give a LUN it sees another number.
    Map {
        initiator: String,
        lun: u16,
        /// The LUN number the initiator sees it as (default: its own).
        #[arg(long = "as", value_name = "NUMBER")]
        mapped_lun: Option<u16>,
    },
    /// Hide a LUN from an initiator.
    Unmap { initiator: String, lun: u16 },
}

fn ctl(a: &CtlArgs) -> ExitCode {
    use srptd::admin::{client, render};
    let (method, params, show): (&str, _, fn(&serde_json::Value) -> String) = match &a.what {
        CtlCommand::Status => ("status", None, render::status),
        CtlCommand::Sessions => ("sessions", None, render::sessions),
        CtlCommand::Luns => ("luns", None, render::luns),
        CtlCommand::Stats => ("stats", None, render::stats),
        CtlCommand::Logout { initiator } => (
            "session_logout",
            Some(serde_json::json!({ "initiator": initiator })),
            |v| format!("logging out {} channel(s)\n", v["channels"]),
        ),
        CtlCommand::Lun(c) => ctl_lun(c),
        CtlCommand::Acl(c) => ctl_acl(c),
        CtlCommand::SaveConfig { path } => ("save_config", Some(serde_json::json!({ "path": path })), |v| {
            format!("saved to {}\n", v["path"].as_str().unwrap_or("?"))
        }),
        CtlCommand::Reload => ("reload", None, render::reloaded),
        CtlCommand::Alua { action: None } => ("alua", None, render::alua),
        CtlCommand::Alua {
            action: Some(AluaCommand::Set { group, state }),
        } => (
            "alua_set_state",
            Some(serde_json::json!({ "group": group, "state": state })),
            render::alua_set,
        ),
    };
    match client::call(&a.socket, method, params) {
        Ok(v) => {
            if a.json {
                println!("{v:#}");
            } else {
                print!("{}", show(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e @ client::CallError::Rpc { .. }) => {
            eprintln!("srptd ctl {method}: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("srptd ctl {method}: {e}");
            ExitCode::from(2)
        }
    }
}

type CtlCall = (
    &'static str,
    Option<serde_json::Value>,
    fn(&serde_json::Value) -> String,
);

fn ctl_lun(c: &LunCommand) -> CtlCall {
    use serde_json::json;
    use srptd::admin::render;
    match c {
        LunCommand::Add {
            number,
            backstore,
            read_only,
            block_size,
            serial,
            naa,
            thick,
        } => (
            "lun_add",
            Some(json!({
                "number": number, "backstore": backstore, "read_only": read_only,
                "block_size": block_size, "serial": serial, "naa": naa, "thin": !thick,
            })),
            render::applied,
        ),
        LunCommand::Remove { number } => ("lun_remove", Some(json!({ "number": number })), render::applied),
        LunCommand::Resize { number, size } => (
            "lun_resize",
            Some(json!({ "number": number, "size": size })),
            |v| format!("LUN {}: {} blocks\n", v["lun"], v["blocks"]),
        ),
        LunCommand::ReadOnly { number, state } => (
            "lun_set_read_only",
            Some(json!({ "number": number, "read_only": state == "on" })),
            render::applied,
        ),
    }
}

fn ctl_acl(c: &AclCommand) -> CtlCall {
    use serde_json::json;
    use srptd::admin::render;
    let (method, params) = match c {
        AclCommand::Add {
            initiator,
            luns,
            read_only,
            address,
        } => (
            "acl_add",
            json!({ "initiator": initiator, "luns": luns, "read_only": read_only, "address": address }),
        ),
        AclCommand::Remove { initiator } => ("acl_remove", json!({ "initiator": initiator })),
        AclCommand::Map {
            initiator,
            lun,
            mapped_lun,
        } => (
            "acl_map",
            json!({ "initiator": initiator, "lun": lun, "mapped_lun": mapped_lun }),
        ),
        AclCommand::Unmap { initiator, lun } => ("acl_unmap", json!({ "initiator": initiator, "lun": lun })),
    };
    (method, Some(params), render::applied)
}

#[derive(Debug, clap::Args)]
struct DmQueryArgs {
    /// RDMA device to send the queries from (e.g. rxe0, mlx5_0).
    #[arg(long)]
    device: String,
    /// Port of the device (1-based).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    port: u8,
    /// Destination port GID (`fe80::2:c903:a:b`, the sysfs form, or 32 hex
    /// digits). Default: this port's own GID index 0, i.e. the agent on
    /// this node. RoCE needs a GID; on InfiniBand `--lid` may be used instead.
    #[arg(long, value_parser = parse_gid_arg)]
    gid: Option<Ipv6Addr>,
    /// Destination LID (InfiniBand; default: this port's own LID).
    #[arg(long)]
    lid: Option<u16>,
    /// Local GID index for the GRH (on rxe use 0, the link-local GID: the
    /// kernel drops answers to the IPv4-mapped one).
    #[arg(long, default_value_t = 0)]
    gid_index: u8,
    /// Per-request answer timeout, milliseconds (the kernel retries 3 times).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60000))]
    timeout_ms: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also print each answer's raw attribute data.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    /// Instead of the discovery sequence, send a fixed list of valid and
    /// invalid requests and print each answer's status.
    #[arg(long, conflicts_with_all = ["json", "raw"])]
    probe: bool,
}

fn parse_gid_arg(s: &str) -> Result<Ipv6Addr, String> {
    if let Some(g) = parse_hex::<16>(s) {
        return Ok(Ipv6Addr::from(g));
    }
    s.parse::<Ipv6Addr>()
        .map_err(|_| format!("{s}: not a GID (e.g. fe80::ff:fe00:7701 or fe80000000000000000000fffe007701)"))
}

fn dm_query(a: &DmQueryArgs) -> ExitCode {
    let o = QueryOptions {
        dest_gid: a.gid.map(|g| g.octets()),
        dest_lid: a.lid,
        gid_index: a.gid_index,
        timeout_ms: a.timeout_ms,
        ..QueryOptions::new(&a.device, a.port)
    };
    if a.probe {
        let list = standard_probes();
        let reqs: Vec<_> = list.iter().map(|&(_, m, at, x)| (m, at, x)).collect();
        return match probe(&o, &reqs) {
            Ok(answers) => {
                for ((name, ..), ans) in list.iter().zip(&answers) {
                    println!("{}", probe_line(name, ans.as_ref()));
                }
                if answers.iter().any(Option::is_none) {
                    eprintln!("srptd dm-query: some probes got no answer");
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => dm_query_error(a, &e),
        };
    }
    match query_with(&o) {
        Ok(r) => {
            if a.json {
                println!("{}", r.to_json());
            } else {
                print!("{r}");
                if a.raw {
                    print!("{}", r.raw_dump());
                }
            }
            let incomplete = r
                .controllers
                .iter()
                .any(|c| c.profile.is_err() || c.services_error.is_some());
            if incomplete {
                eprintln!("srptd dm-query: some attributes could not be read (see above)");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => dm_query_error(a, &e),
    }
}

fn dm_query_error(a: &DmQueryArgs, e: &QueryError) -> ExitCode {
    use srptd::mad::query::AttrError;
    use srptd::wire::mad::MadStatus;
    let hint = match e {
        QueryError::NoIoUnitInfo(AttrError::Status(MadStatus::UNSUPPORTED_METHOD_ATTR)) => {
            ": no device-management agent is registered at the destination (the kernel answers for a \
             missing one with 0x000c); is srptd running, without --no-dm, or ib_srpt loaded?"
        }
        QueryError::NoIoUnitInfo(AttrError::Timeout) => {
            ": nothing answered; check --gid/--lid (on RoCE address the link-local GID from --gid-index 0)"
        }
        _ => "",
    };
    eprintln!(
        "srptd dm-query --device {} --port {}: {e}{hint}",
        a.device, a.port
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SRPTD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::DmQuery(a)) => return dm_query(a),
        Some(Command::Ctl(a)) => return ctl(a),
        None => {}
    }
    let flags = cli.flags();
    let settings = match config::read(cli.config.as_deref(), &flags) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("srptd: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match settings.build() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("srptd: {e}");
            return ExitCode::from(2);
        }
    };
    let live = config::LiveConfig {
        settings,
        path: cli.config.clone(),
        flags,
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let opts = loaded.options;
    // Named by file and line here; a machine without RDMA devices is told
    // so when the target starts.
    let devices: Vec<String> = srptd::rdma::devices()
        .map(|ds| ds.into_iter().map(|d| d.name).collect())
        .unwrap_or_default();
    if !devices.is_empty() {
        if let Err(e) = live.settings.check_devices(&devices) {
            eprintln!("srptd: {e}");
            return ExitCode::from(2);
        }
    }
    let target = match Target::new(loaded.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("srptd: {}", live.settings.target_error(&e));
            return ExitCode::from(2);
        }
    };
    for l in target.luns() {
        tracing::info!(lun = l.lun, blocks = l.num_blocks, block_size = l.block_size, read_only = l.read_only, serial = %l.serial, "LUN");
    }
    match driver::run(opts, target, live) {
        Ok(s) => {
            let st = &s.stats;
            eprintln!(
                "srptd: stopped: logins {} rejects {} commands {} immediate {} indirect {} external-tables {} zero-copy {} task-mgmt {} aborted {} protocol-errors {} leaked-channels {} leaked-srq-slots {} poller-sleeps {} doorbells {} uring-commands {} uring-enters {} rbd-commands {} worker-jobs {}",
                s.logins, s.rejects, st.io.commands, st.immediate, st.indirect, st.external_tables, st.zero_copy,
                st.io.task_mgmt, st.io.aborted, st.protocol_errors, s.leaked_channels, s.leaked_srq_slots,
                s.poller_sleeps, s.doorbells, s.uring_commands, s.uring_enters, s.rbd_commands, s.worker_jobs
            );
            if s.leaked_channels == 0 && s.leaked_srq_slots == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("srptd: {e}");
            ExitCode::FAILURE
        }
    }
}
