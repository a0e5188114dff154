//! A minimal Device Management agent: registers class 0x06 on a port and
//! answers with `srptd::mad::DmAgent` for a while. Used by
//! `tests/vm/dm-kernel.sh` to compare with the kernel's ib_srpt (which must
//! not be loaded: it owns class 0x06 while it is).
//!
//!     dm_agent <device> <port> <seconds>
use std::process::ExitCode;
use std::time::{Duration, Instant};

use srptd::mad::{DmAgent, DmConfig};
use srptd::rdma::umad::UmadPort;
use srptd::wire::mad::{DmMad, Method, MgmtClass};

fn node_guid(device: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/sys/class/infiniband/{device}/node_guid")).ok()?;
    u64::from_str_radix(&s.trim().replace(':', ""), 16).ok()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(device), Some(port), Some(secs)) = (
        args.first(),
        args.get(1).and_then(|p| p.parse::<u8>().ok()),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: dm_agent <device> <port> <seconds>");
        return ExitCode::from(2);
    };
    let Some(guid) = node_guid(device) else {
        eprintln!("dm_agent: cannot read the node GUID of {device}");
        return ExitCode::FAILURE;
    };
    let run = || -> std::io::Result<()> {
        let port_h = UmadPort::open(device, port)?;
        let agent = port_h.register_agent(
            MgmtClass::DEVICE_MGMT.0,
            DmMad::CLASS_VERSION,
            &[Method::GET.0, Method::SET.0],
        )?;
        let mut dm = DmAgent::new(DmConfig::for_node_guid(guid));
        eprintln!("dm_agent: answering DevMgt on {device}/{port} as IOC {guid:016x} for {secs} s");
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let Some(r) = port_h.recv(Some(Duration::from_millis(200)))? else {
                continue;
            };
            if r.agent_id != agent.id() || r.status != 0 {
                continue;
            }
            if let Some(rsp) = dm.handle(&r.mad[..r.len]) {
                port_h.send(&agent, &r.addr.reply(), &rsp, 0, 0)?;
            }
        }
        eprintln!("dm_agent: done, {:?}", dm.stats());
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dm_agent: {e}");
            ExitCode::FAILURE
        }
    }
}
