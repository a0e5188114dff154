//! Canned [`DmReport`]s for the rendering tests, built field by field (no
//! agent, no query) so that they do not change when the agent does.
//!
//! `testdata/<name>.json`, `.txt` and `.raw` are what the hand-written
//! renderer of commit "mad: golden JSON and text of canned DmReports"
//! printed for them; the serde renderer must print the same.

use crate::mad::agent::{rdma_cm_service_id, RDMA_PS_IB};
use crate::mad::query::{AttrError, ControllerReport, DmReport, Exchange};
use crate::wire::mad::{
    AttributeId, ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadStatus, ServiceEntries,
    ServiceEntry, SlotState,
};
use crate::wire::WireError;

const GID: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xc9, 0x03, 0, 0x0a, 0x0b, 0x0c,
];

fn data(emit: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> [u8; DmMad::DATA_LEN] {
    let mut d = [0; DmMad::DATA_LEN];
    emit(&mut d).expect("fits in 192 bytes");
    d
}

fn exchange(attr_id: AttributeId, attr_mod: u32, status: Option<MadStatus>, d: [u8; 192]) -> Exchange {
    Exchange {
        attr_id,
        attr_mod,
        status,
        data: d,
    }
}

fn srp_profile(guid: u64, send_size: u32, service_entries: u8) -> IoControllerProfile {
    let mut p = IoControllerProfile {
        guid,
        vendor_id: 0x00_1405,
        device_id: 0x0000_0001,
        device_version: 0x0102,
        subsystem_vendor_id: 0x00_1405,
        subsystem_id: 0x0000_0002,
        io_class: IoControllerProfile::SRP_IO_CLASS_R16A,
        io_subclass: 0x609e,
        protocol: 0x0108,
        protocol_version: 0x0001,
        send_queue_depth: 96,
        rdma_read_depth: 16,
        send_size,
        rdma_size: 512 << 10,
        op_cap_mask: IoControllerProfile::OP_SRP_TARGET,
        svc_cap_mask: 0,
        service_entries,
        id_string: [0; 64],
    };
    p.set_id_str("srptd userspace SRP target");
    p
}

/// What srptd answers on RoCE (dm.sh part 1): one controller, one SRP
/// service with an RDMA/CM service ID, an initiator asking for bigger IUs.
fn srptd_roce() -> DmReport {
    let cpi = ClassPortInfo {
        base_version: 1,
        class_version: 1,
        cap_mask: 0,
        cap_mask2: 0,
        resp_time_value: 20,
        ..Default::default()
    };
    let mut iou = IoUnitInfo {
        change_id: 0x5a3c,
        max_controllers: 16,
        ..Default::default()
    };
    for s in 2..=16 {
        iou.set_slot(s, SlotState::NOT_INSTALLED);
    }
    iou.set_slot(1, SlotState::PRESENT);
    let guid = 0x0002_c903_000a_0b0c;
    let profile = srp_profile(guid, 4164, 1);
    let svc = ServiceEntry::srp(guid, rdma_cm_service_id(RDMA_PS_IB, 5555));
    let mut entries = ServiceEntries::default();
    entries.entries[0] = svc;
    DmReport {
        dest_gid: Some(GID),
        dest_lid: 0,
        pkey: 0xffff,
        class_port_info: Ok(cpi),
        io_unit_info: Ok(iou),
        controllers: vec![ControllerReport {
            slot: 1,
            profile: Ok(profile),
            services: vec![svc],
            services_error: None,
        }],
        transcript: vec![
            exchange(
                AttributeId::CLASS_PORT_INFO,
                0,
                Some(MadStatus::SUCCESS),
                data(|b| cpi.emit(b)),
            ),
            exchange(
                AttributeId::IO_UNIT_INFO,
                0,
                Some(MadStatus::SUCCESS),
                data(|b| iou.emit(b)),
            ),
            exchange(
                AttributeId::IO_CONTROLLER_PROFILE,
                1,
                Some(MadStatus::SUCCESS),
                data(|b| profile.emit(b)),
            ),
            exchange(
                AttributeId::SERVICE_ENTRIES,
                0x0001_0000,
                Some(MadStatus::SUCCESS),
                data(|b| entries.emit(b)),
            ),
        ],
        initiator_it_iu_len: Some(8260),
    }
}

/// Two controllers of an IPv4-mapped GID, ib_srpt-like service IDs (no
/// RDMA/CM port), an r10 I/O class, a non-SRP and a non-UTF-8 service.
fn ipv4_two_controllers() -> DmReport {
    let mut r = srptd_roce();
    r.dest_gid = Some(std::net::Ipv4Addr::new(192, 168, 77, 1).to_ipv6_mapped().octets());
    r.dest_lid = 0x0013;
    r.pkey = 0x8001;
    r.initiator_it_iu_len = Some(4164);
    let mut iou = *r.io_unit_info.as_ref().unwrap();
    iou.set_slot(2, SlotState::PRESENT);
    iou.option_rom = true;
    r.io_unit_info = Ok(iou);
    let mut p2 = srp_profile(0x0002_c903_000a_0b0d, 8260, 3);
    p2.io_class = IoControllerProfile::SRP_IO_CLASS_R10;
    p2.op_cap_mask = 0xff;
    p2.svc_cap_mask = 0x01;
    let mut bad_name = ServiceEntry::new("", 7);
    bad_name.name[..3].copy_from_slice(&[0x53, 0xff, 0xfe]);
    r.controllers[0].services[0].id = 0x0002_c903_000a_0b0c;
    r.controllers.push(ControllerReport {
        slot: 2,
        profile: Ok(p2),
        services: vec![
            ServiceEntry::srp(0x0002_c903_000a_0b0d, 0x0002_c903_000a_0b0d),
            ServiceEntry::new("other.service \"x\"", u64::MAX),
            bad_name,
        ],
        services_error: None,
    });
    r
}

/// Errors everywhere: no GID, statuses, timeouts, malformed answers, and
/// strings that need JSON escaping (quote, backslash, newline, tab, other
/// control characters, non-ASCII, invalid UTF-8).
fn errors_and_escapes() -> DmReport {
    let mut iou = IoUnitInfo {
        change_id: 1,
        max_controllers: 5,
        diag_device_id: true,
        option_rom: true,
        ..Default::default()
    };
    iou.set_slot(1, SlotState::PRESENT);
    iou.set_slot(2, SlotState::NOT_INSTALLED);
    iou.set_slot(3, SlotState::PRESENT);
    iou.set_slot(4, SlotState::NO_SLOT);
    iou.set_slot(5, SlotState(0x7));
    let mut p = srp_profile(0xffff_ffff_ffff_fff1, u32::MAX, 2);
    p.vendor_id = 0x00ff_ffff;
    p.device_id = 0xffff_ffff;
    p.send_queue_depth = u16::MAX;
    p.rdma_read_depth = u8::MAX;
    p.rdma_size = 0;
    let id = b"q\"uote back\\slash\nnl\r\ttab \x01\x1f\x7f \xc3\xa9 \xff end";
    p.id_string = [0; 64];
    p.id_string[..id.len()].copy_from_slice(id);
    let mut ctl = ServiceEntry::new("SRP.T10:\u{1}bc\"\\\u{7f}é12345", 0x0123_4567_89ab_cdef);
    ctl.name[39] = b'z';
    DmReport {
        dest_gid: None,
        dest_lid: 0x001b,
        pkey: 0x7fff,
        class_port_info: Err(AttrError::Status(MadStatus::UNSUPPORTED_METHOD_ATTR)),
        io_unit_info: Ok(iou),
        controllers: vec![
            ControllerReport {
                slot: 1,
                profile: Err(AttrError::Timeout),
                services: Vec::new(),
                services_error: None,
            },
            ControllerReport {
                slot: 3,
                profile: Ok(p),
                services: vec![ctl],
                services_error: Some(AttrError::Malformed(WireError::TooShort {
                    what: "ServiceEntries",
                    need: 192,
                    have: 100,
                })),
            },
            ControllerReport {
                slot: 4,
                profile: Err(AttrError::Status(MadStatus(0x7f1c))),
                services: Vec::new(),
                services_error: Some(AttrError::Status(MadStatus::NO_IOC)),
            },
        ],
        transcript: vec![
            exchange(
                AttributeId::CLASS_PORT_INFO,
                0,
                Some(MadStatus::UNSUPPORTED_METHOD_ATTR),
                [0; 192],
            ),
            exchange(
                AttributeId::IO_UNIT_INFO,
                0,
                Some(MadStatus::SUCCESS),
                data(|b| iou.emit(b)),
            ),
            exchange(AttributeId::IO_CONTROLLER_PROFILE, 1, None, [0; 192]),
            exchange(
                AttributeId(0xff00),
                0xffff_ffff,
                Some(MadStatus(0xffff)),
                [0xa5; 192],
            ),
        ],
        initiator_it_iu_len: None,
    }
}

/// The query stopped after IOUnitInfo.
fn no_io_unit_info() -> DmReport {
    DmReport {
        dest_gid: Some([0xff; 16]),
        class_port_info: Err(AttrError::Timeout),
        io_unit_info: Err(AttrError::Malformed(WireError::TooShort {
            what: "IOUnitInfo",
            need: 132,
            have: 0,
        })),
        transcript: vec![
            exchange(AttributeId::CLASS_PORT_INFO, 0, None, [0; 192]),
            exchange(AttributeId::IO_UNIT_INFO, 0, Some(MadStatus::BUSY), [1; 192]),
        ],
        ..DmReport::default()
    }
}

/// Every control character in an ID string and a service name. serde_json
/// writes 0x08 and 0x0c as `\b` and `\f` where the hand-written code wrote
/// `\u0008` and `\u000c`: the same JSON string, so this one is compared as
/// parsed JSON, not byte for byte.
pub(crate) fn control_chars() -> DmReport {
    let mut r = srptd_roce();
    let p = r.controllers[0].profile.as_mut().unwrap();
    p.id_string = [0; 64];
    for (i, b) in p.id_string.iter_mut().take(32).enumerate() {
        *b = i as u8 + 1;
    }
    p.id_string[31] = 0x7f;
    let s = &mut r.controllers[0].services[0];
    s.name[8..16].copy_from_slice(&[0x08, 0x0c, 0x0a, 0x0d, 0x09, 0x22, 0x5c, 0x2f]);
    r
}

/// The canned reports with the name of their `testdata/` files.
pub(crate) fn canned_reports() -> Vec<(&'static str, DmReport)> {
    vec![
        ("control_chars", control_chars()),
        ("srptd_roce", srptd_roce()),
        ("ipv4_two_controllers", ipv4_two_controllers()),
        ("errors_and_escapes", errors_and_escapes()),
        ("no_io_unit_info", no_io_unit_info()),
        ("default", DmReport::default()),
    ]
}
