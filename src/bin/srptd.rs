//! `srptd`: run the SRP target; `srptd dm-query`: query a port's
//! device-management agent.

use std::net::Ipv6Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use srptd::driver::{self, Options};
use srptd::mad::query::standard_probes;
use srptd::mad::render::probe_line;
use srptd::mad::session::{probe, query_with, QueryError, QueryOptions};
use srptd::proto::LoginLimits;
use srptd::scsi::{Access, BackstoreConfig, LunConfig, Target, TargetConfig};
use srptd::wire::parse_hex;

/// A userspace SCSI RDMA Protocol (SRP) target.
///
/// Without a subcommand, runs the target with the options below.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A LUN backstore, numbered in order from 0: `ram:<size>`,
    /// `file:<path>`, with options `,ro` and `,bs=512|4096`
    /// (e.g. `ram:256M`, `file:/srv/disk.img,ro`). Default: one `ram:256M`.
    #[arg(long = "lun", value_name = "SPEC")]
    luns: Vec<String>,
    /// Directory for persistent reservations kept across restarts (APTPL):
    /// one file per LUN, `pr-<NAA id>.state`, created on first use.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/srptd")]
    state_dir: std::path::PathBuf,
    /// Do not keep persistent reservations across restarts: APTPL is then
    /// refused (PTPL_C = 0) and the state directory is not used.
    #[arg(long, conflicts_with = "state_dir")]
    no_state_dir: bool,
    /// RDMA/CM port to listen on.
    #[arg(long, default_value_t = 5555)]
    port: u16,
    /// RDMA device to serve (repeatable; default: all).
    #[arg(long = "device", value_name = "NAME")]
    devices: Vec<String>,
    /// Initiator allowed to log in: `ANY`, or a 32-hex-digit initiator port
    /// id (repeatable).
    #[arg(long = "allow", value_name = "ANY|ID", default_value = "ANY")]
    allow: Vec<String>,
    /// Credits (request limit) granted per channel.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    queue_depth: u32,
    /// Largest request IU a login may ask for, in bytes.
    #[arg(long, default_value_t = 65604, value_parser = clap::value_parser!(u32).range(64..=1048576))]
    max_it_iu_len: u32,
    /// Do not offer immediate data.
    #[arg(long)]
    no_immediate_data: bool,
    /// Largest data transfer of one command (e.g. 1M).
    #[arg(long, default_value = "1M")]
    max_transfer: String,
    /// Data buffer pool per channel (e.g. 32M).
    #[arg(long, default_value = "32M")]
    pool_size: String,
    /// Memory all channels together may take (rings and pools, e.g. 2G);
    /// logins beyond it are rejected with INSUFFICIENT RESOURCES.
    /// Default: half of the memory available at start.
    #[arg(long)]
    max_channel_memory: Option<String>,
    /// Poller threads (data path); each channel runs on the least loaded
    /// one. Default: one per CPU srptd may use, at most 8.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pollers: Option<u16>,
    /// Worker threads per poller for file I/O.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    io_threads: u16,
    /// Microseconds to keep polling after the last completion before sleeping.
    #[arg(long, default_value_t = 50)]
    spin_us: u64,
    /// Do not answer InfiniBand device-management MADs (IOUnitInfo,
    /// IOControllerProfile, ServiceEntries) on the served ports.
    #[arg(long)]
    no_dm: bool,
    /// One shared receive queue per RDMA device for all its channels,
    /// instead of a receive queue and ring per channel. Immediate data
    /// works in both modes.
    #[arg(long)]
    srq: bool,
    /// Receive slots of each shared receive queue (with --srq). Default:
    /// 4096, fewer if slots of --max-it-iu-len would take more than 64 MiB;
    /// always at most the device's max_srq_wr.
    #[arg(long, value_name = "SLOTS", requires = "srq",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    srq_size: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the device-management agent of a port (srptd's or the kernel's
    /// ib_srpt) what it advertises, like srp_daemon does, and print the
    /// decoded answers and the add_target string(s) they make.
    DmQuery(DmQueryArgs),
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

fn size(field: &str, v: &str) -> Result<u64, String> {
    srptd::scsi::backstore::parse_size(v).ok_or_else(|| format!("--{field} {v}: not a size (e.g. 512K, 1M)"))
}

fn parse_allow(list: &[String]) -> Result<Access, String> {
    if list.iter().any(|a| a.eq_ignore_ascii_case("any")) {
        return Ok(Access::Any);
    }
    let mut set = std::collections::HashSet::new();
    for a in list {
        let id = parse_hex::<16>(a)
            .ok_or_else(|| format!("--allow {a}: expected ANY or a 32-hex-digit initiator port id"))?;
        set.insert(id);
    }
    Ok(Access::Only(set))
}

fn setup(cli: &Cli) -> Result<(Options, TargetConfig), String> {
    let specs = if cli.luns.is_empty() {
        vec!["ram:256M".to_owned()]
    } else {
        cli.luns.clone()
    };
    let mut luns = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let bs = BackstoreConfig::parse(spec, "--lun").map_err(|e| e.to_string())?;
        luns.push(LunConfig::new(i as u16, bs));
    }
    let max_transfer = size("max-transfer", &cli.max_transfer)?;
    if max_transfer < 4096 || max_transfer % 4096 != 0 || max_transfer > 64 << 20 {
        return Err(format!(
            "--max-transfer {}: must be a multiple of 4K between 4K and 64M",
            cli.max_transfer
        ));
    }
    let pool_size = size("pool-size", &cli.pool_size)?;
    if pool_size < max_transfer || pool_size > 4 << 30 {
        return Err(format!(
            "--pool-size {}: must be at least --max-transfer and at most 4G",
            cli.pool_size
        ));
    }
    let channel_memory = match &cli.max_channel_memory {
        None => None,
        Some(s) => {
            let b = size("max-channel-memory", s)?;
            if b < pool_size {
                return Err(format!(
                    "--max-channel-memory {s}: must be at least --pool-size (one channel's pool)"
                ));
            }
            Some(b)
        }
    };
    let access = parse_allow(&cli.allow)?;
    let tcfg = TargetConfig {
        luns,
        access,
        max_transfer_bytes: max_transfer as u32,
        state_dir: (!cli.no_state_dir).then(|| cli.state_dir.clone()),
        ..TargetConfig::default()
    };
    let opts = Options {
        port: cli.port,
        devices: cli.devices.clone(),
        limits: LoginLimits {
            max_it_iu_len: cli.max_it_iu_len,
            queue_depth: cli.queue_depth,
            immediate_data: !cli.no_immediate_data,
            ..LoginLimits::default()
        },
        pool_size: pool_size as usize,
        pollers: cli
            .pollers
            .map_or_else(srptd::driver::default_pollers, usize::from),
        io_threads: cli.io_threads as usize,
        spin: Duration::from_micros(cli.spin_us),
        dm: !cli.no_dm,
        srq: cli.srq,
        srq_size: cli.srq_size,
        channel_memory,
        ..Options::default()
    };
    Ok((opts, tcfg))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SRPTD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::DmQuery(a)) = &cli.command {
        return dm_query(a);
    }
    let (opts, tcfg) = match setup(&cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("srptd: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match Target::new(tcfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("srptd: {e}");
            return ExitCode::from(2);
        }
    };
    for l in target.luns() {
        tracing::info!(lun = l.lun, blocks = l.num_blocks, block_size = l.block_size, read_only = l.read_only, serial = %l.serial, "LUN");
    }
    match driver::run(opts, target) {
        Ok(s) => {
            let st = &s.stats;
            eprintln!(
                "srptd: stopped: logins {} rejects {} commands {} immediate {} indirect {} external-tables {} zero-copy {} task-mgmt {} aborted {} protocol-errors {} leaked-channels {} leaked-srq-slots {} poller-sleeps {} doorbells {}",
                s.logins, s.rejects, st.commands, st.immediate, st.indirect, st.external_tables, st.zero_copy,
                st.task_mgmt, st.aborted, st.protocol_errors, s.leaked_channels, s.leaked_srq_slots,
                s.poller_sleeps, s.doorbells
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
