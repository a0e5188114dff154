//! MAD parsers, the DevMgt agent and the query client on arbitrary bytes:
//! nothing may panic; whatever parses re-emits and re-parses to the same
//! value; every answer the agent gives is a well-formed response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srptd::mad::query::DmQuery;
use srptd::mad::{DmAgent, DmConfig};
use srptd::wire::mad::{
    AttributeId, ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadHeader, Method, MgmtClass, ServiceEntries,
};

fuzz_target!(|data: &[u8]| {
    let _ = MadHeader::parse(data);
    let _ = ClassPortInfo::parse(data);
    let _ = IoUnitInfo::parse(data);
    let _ = IoControllerProfile::parse(data);
    let _ = ServiceEntries::parse(data);
    if let Ok(m) = DmMad::parse(data) {
        assert_eq!(DmMad::parse(&m.to_bytes()).as_ref(), Ok(&m));
    }

    // The agent answers exactly the DevMgt v1 requests (IBTA 13.4.5), with
    // a DevMgt v1 response echoing TID, attribute and modifier; a success
    // carries an attribute that parses, an error carries zero data.
    let mut agent = DmAgent::new(DmConfig::for_node_guid(0x0002_c903_0000_0001));
    let q = DmMad::parse(data).ok();
    let must_answer = q.as_ref().is_some_and(|q| {
        let h = &q.header;
        h.base_version == MadHeader::BASE_VERSION
            && h.mgmt_class == MgmtClass::DEVICE_MGMT
            && h.class_version == DmMad::CLASS_VERSION
            && !h.method.is_response()
    });
    let rsp = agent.handle(data);
    assert_eq!(rsp.is_some(), must_answer, "answered {:?}", q.map(|q| q.header));
    if let Some(rsp) = rsp {
        let r = DmMad::parse(&rsp).expect("agent answers parse");
        let q = q.expect("answered requests parse").header;
        let h = r.header;
        assert_eq!((h.base_version, h.mgmt_class, h.class_version), (1, MgmtClass::DEVICE_MGMT, 1));
        assert_eq!(h.method, q.method.response());
        assert!(h.method.is_response());
        assert_eq!((h.tid, h.attr_id, h.attr_mod), (q.tid, q.attr_id, q.attr_mod));
        if h.status.is_success() {
            assert_eq!(q.method, Method::GET, "only Get succeeds");
            let d = &r.data[..];
            match h.attr_id {
                AttributeId::CLASS_PORT_INFO => drop(ClassPortInfo::parse(d).expect("ClassPortInfo")),
                AttributeId::IO_UNIT_INFO => drop(IoUnitInfo::parse(d).expect("IOUnitInfo")),
                AttributeId::IO_CONTROLLER_PROFILE => drop(IoControllerProfile::parse(d).expect("IOControllerProfile")),
                AttributeId::SERVICE_ENTRIES => drop(ServiceEntries::parse(d).expect("ServiceEntries")),
                a => panic!("success for attribute {a:?}"),
            }
        } else {
            assert!(r.data.iter().all(|&b| b == 0), "error response with data");
        }
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
