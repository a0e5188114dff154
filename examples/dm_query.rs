//! Query the InfiniBand Device Management agent of a port and print what it
//! advertises, like `ibsrpdm`/`srp_daemon -o` but also on RoCE. The real
//! entry point will be `srptd dm-query`.
//!
//!     dm_query <device> <port> [--gid <dest GID>] [--json] [--raw] [--probe]
//!
//! `--probe` sends a fixed list of valid and invalid requests and prints
//! the status of each answer (to compare responders' error handling).
//!
//! Without `--gid` the query goes to the port's own GID index 0 (this node).
use std::process::ExitCode;

use srptd::mad::client::{probe, query_with, QueryOptions};
use srptd::rdma::umad::parse_gid;
use srptd::wire::mad::{AttributeId as A, Method as M, ServiceEntriesModifier};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: dm_query <device> <port> [--gid GID] [--json] [--raw] [--probe]");
        ExitCode::from(2)
    };
    let (Some(device), Some(port)) = (args.first(), args.get(1).and_then(|p| p.parse::<u8>().ok())) else {
        return usage();
    };
    let mut o = QueryOptions::new(device, port);
    let (mut json, mut raw, mut probes) = (false, false, false);
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--raw" => raw = true,
            "--probe" => probes = true,
            "--gid" => match it.next().and_then(|g| parse_gid(g)) {
                Some(g) => o.dest_gid = Some(g),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    if probes {
        return run_probes(&o);
    }
    match query_with(&o) {
        Ok(r) => {
            if json {
                println!("{}", r.to_json());
            } else {
                print!("{r}");
            }
            if raw {
                for e in &r.transcript {
                    let status = e.status.map_or("none".to_owned(), |s| format!("{:04x}", s.0));
                    println!(
                        "raw attr {:04x} mod {:08x} status {status}:",
                        e.attr_id.0, e.attr_mod
                    );
                    for (i, chunk) in e.data.chunks(16).enumerate() {
                        let h: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                        println!("  {:3}: {}", i * 16, h.join(" "));
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dm_query: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_probes(o: &QueryOptions) -> ExitCode {
    let se = |slot, last, first| ServiceEntriesModifier { slot, last, first }.to_u32();
    let list = [
        ("Get ClassPortInfo", M::GET, A::CLASS_PORT_INFO, 0),
        ("Get IOUnitInfo", M::GET, A::IO_UNIT_INFO, 0),
        (
            "Get IOControllerProfile slot 0",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            0,
        ),
        (
            "Get IOControllerProfile slot 1",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            1,
        ),
        (
            "Get IOControllerProfile slot 2",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            2,
        ),
        (
            "Get IOControllerProfile slot 16",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            16,
        ),
        (
            "Get IOControllerProfile slot 17",
            M::GET,
            A::IO_CONTROLLER_PROFILE,
            17,
        ),
        (
            "Get ServiceEntries 1:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 0, 0),
        ),
        (
            "Get ServiceEntries 1:0-1",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 1, 0),
        ),
        (
            "Get ServiceEntries 1:1-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 0, 1),
        ),
        (
            "Get ServiceEntries 1:0-3",
            M::GET,
            A::SERVICE_ENTRIES,
            se(1, 3, 0),
        ),
        (
            "Get ServiceEntries 2:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(2, 0, 0),
        ),
        (
            "Get ServiceEntries 0:0-0",
            M::GET,
            A::SERVICE_ENTRIES,
            se(0, 0, 0),
        ),
        ("Get DiagCode", M::GET, A::DIAG_CODE, 0),
        ("Get attribute 0xff00", M::GET, A(0xff00), 0),
        ("Set ClassPortInfo", M::SET, A::CLASS_PORT_INFO, 0),
        ("Set IOUnitInfo", M::SET, A::IO_UNIT_INFO, 0),
    ];
    let reqs: Vec<_> = list.iter().map(|&(_, m, a, x)| (m, a, x)).collect();
    match probe(o, &reqs) {
        Ok(answers) => {
            for ((name, ..), a) in list.iter().zip(answers) {
                match a {
                    Some(m) => println!(
                        "probe {name:34} -> method {:#04x} status {:04x} data[0..8] {:02x?}",
                        m.header.method.0,
                        m.header.status.0,
                        &m.data[..8]
                    ),
                    None => println!("probe {name:34} -> no answer"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dm_query: {e}");
            ExitCode::FAILURE
        }
    }
}
