//! MAD parsers, the DevMgt agent and the query client on arbitrary bytes:
//! nothing may panic; whatever parses re-emits and re-parses to the same
//! value; every answer the agent gives is a well-formed response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srptd::mad::query::DmQuery;
use srptd::mad::{DmAgent, DmConfig};
use srptd::wire::mad::{ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadHeader, ServiceEntries};

fuzz_target!(|data: &[u8]| {
    let _ = MadHeader::parse(data);
    let _ = ClassPortInfo::parse(data);
    let _ = IoUnitInfo::parse(data);
    let _ = IoControllerProfile::parse(data);
    let _ = ServiceEntries::parse(data);
    if let Ok(m) = DmMad::parse(data) {
        assert_eq!(DmMad::parse(&m.to_bytes()).as_ref(), Ok(&m));
    }

    let mut agent = DmAgent::new(DmConfig::for_node_guid(0x0002_c903_0000_0001));
    if let Some(rsp) = agent.handle(data) {
        let r = DmMad::parse(&rsp).expect("agent answers parse");
        let q = DmMad::parse(data).expect("answered requests parse");
        assert!(r.header.method.is_response());
        assert_eq!(r.header.tid, q.header.tid);
    }

    // Feed the bytes to the client as the answer to each of its requests.
    let mut q = DmQuery::new(1);
    let mut n = 0;
    while let Some(req) = q.poll_request() {
        let mut a = data.to_vec();
        if a.len() >= 24 {
            a[8..24].copy_from_slice(&req[8..24]);
        }
        if !matches!(q.handle_response(&a), Ok(true)) {
            q.handle_timeout();
        }
        n += 1;
        if n > 64 {
            break;
        }
    }
    let r = q.into_report();
    let _ = r.to_string();
    let _ = r.to_json();
});
