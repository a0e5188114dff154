//! Cost of answering one device-management MAD: `DmAgent::handle` on the
//! Gets an initiator's discovery (srp_daemon, ibsrpdm) sends, in ns per
//! request. Parse of the request MAD, attribute build and emit of the
//! 256-byte response are all inside the timed call.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use srptd::mad::{DmAgent, DmConfig};
use srptd::wire::mad::{AttributeId, DmMad, Method, ServiceEntriesModifier, MAD_LEN};

const GUID: u64 = 0x0000_00ff_fe00_7701;

fn request(attr: AttributeId, attr_mod: u32) -> [u8; MAD_LEN] {
    DmMad::request(Method::GET, 0x1234_5678_9abc_def0, attr, attr_mod).to_bytes()
}

fn dm_agent(c: &mut Criterion) {
    let entries = ServiceEntriesModifier {
        slot: 1,
        last: 0,
        first: 0,
    }
    .to_u32();
    let cases = [
        ("class_port_info", request(AttributeId::CLASS_PORT_INFO, 0)),
        ("io_unit_info", request(AttributeId::IO_UNIT_INFO, 0)),
        (
            "io_controller_profile",
            request(AttributeId::IO_CONTROLLER_PROFILE, 1),
        ),
        ("service_entries", request(AttributeId::SERVICE_ENTRIES, entries)),
        // An error answer (empty slot 2: NO_IOC) takes the rejecting path.
        (
            "io_controller_profile_no_ioc",
            request(AttributeId::IO_CONTROLLER_PROFILE, 2),
        ),
    ];
    let mut g = c.benchmark_group("dm_agent");
    g.throughput(Throughput::Elements(1));
    for (name, req) in cases {
        let mut agent = DmAgent::new(DmConfig::for_node_guid(GUID));
        // Every case must produce an answer, or the bench times a drop.
        assert!(agent.handle(&req).is_some(), "{name}: no answer");
        let mut out = [0u8; MAD_LEN];
        g.bench_function(name, |b| {
            b.iter(|| black_box(&mut agent).handle_into(black_box(&req), black_box(&mut out)))
        });
    }
    g.finish();
}

criterion_group!(benches, dm_agent);
criterion_main!(benches);
