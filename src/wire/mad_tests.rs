use super::*;
use proptest::prelude::*;

/// A DevMgt Get(IOControllerProfile) for slot 1 as srp_daemon's
/// `init_srp_dm_mad` builds it: base version 1, class 6, class version
/// 1, method Get, TID 0x0000000100000005 (the kernel puts the agent's
/// hi_tid in the high half), attribute 0x0011, modifier 1.
const GET_IOC_HDR: [u8; 24] = [
    0x01, 0x06, 0x01, 0x01, // base, class, class version, method
    0x00, 0x00, 0x00, 0x00, // status, class specific
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, // TID
    0x00, 0x11, 0x00, 0x00, // attribute ID, reserved
    0x00, 0x00, 0x00, 0x01, // attribute modifier
];

/// ib_srpt's `srpt_get_class_port_info`: base and class version 1,
/// `ib_set_cpi_resp_time(cif, 20)`, everything else zero.
fn srpt_class_port_info() -> [u8; 72] {
    let mut b = [0u8; 72];
    b[0] = 1;
    b[1] = 1;
    b[7] = 20;
    b
}

/// ib_srpt's `srpt_get_iou`: change ID 1, 16 controllers, slot 1
/// present (high nibble of byte 4), slots 2-16 empty.
fn srpt_iou() -> [u8; 132] {
    let mut b = [0u8; 132];
    b[1] = 1;
    b[2] = 16;
    b[4] = 0x10;
    b
}

/// An IOControllerProfile laid out per ib_dm_mad.h, with the values
/// ib_srpt would send for a device with vendor ID 0x0002c9 written as
/// a 24-bit IBTA VendorID, part 0x1003, hw_ver 0xa0, SRQ size 4095,
/// srp_max_req_size 8260, RDMA size 1 MiB.
fn ioc_profile_bytes() -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..8].copy_from_slice(&0x0002_c903_00ab_cdefu64.to_be_bytes());
    b[8..11].copy_from_slice(&[0x00, 0x02, 0xc9]); // VendorID, reserved
    b[12..16].copy_from_slice(&0x1003u32.to_be_bytes());
    b[16..18].copy_from_slice(&0x00a0u16.to_be_bytes());
    b[20..23].copy_from_slice(&[0x00, 0x02, 0xc9]);
    b[24..28].copy_from_slice(&0u32.to_be_bytes());
    b[28..30].copy_from_slice(&[0x01, 0x00]); // io class
    b[30..32].copy_from_slice(&[0x60, 0x9e]); // subclass
    b[32..34].copy_from_slice(&[0x01, 0x08]); // protocol
    b[34..36].copy_from_slice(&[0x00, 0x01]); // protocol version
    b[40..42].copy_from_slice(&4095u16.to_be_bytes());
    b[43] = 4; // rdma read depth
    b[44..48].copy_from_slice(&8260u32.to_be_bytes());
    b[48..52].copy_from_slice(&(1u32 << 20).to_be_bytes());
    b[52] = 0x2b; // op cap mask
    b[54] = 1; // service entries
    b[64..80].copy_from_slice(b"Linux SRP target");
    b
}

#[test]
fn header_parse_emit() {
    let h = MadHeader::parse(&GET_IOC_HDR).unwrap();
    assert_eq!(h.base_version, 1);
    assert_eq!(h.mgmt_class, MgmtClass::DEVICE_MGMT);
    assert_eq!(h.class_version, 1);
    assert_eq!(h.method, Method::GET);
    assert_eq!(h.status, MadStatus::SUCCESS);
    assert_eq!(h.tid, 0x0000_0001_0000_0005);
    assert_eq!(h.attr_id, AttributeId::IO_CONTROLLER_PROFILE);
    assert_eq!(h.attr_mod, 1);
    let mut b = [0xffu8; 24];
    assert_eq!(h.emit(&mut b), Ok(24));
    assert_eq!(b, GET_IOC_HDR);
    assert_eq!(
        MadHeader::parse(&GET_IOC_HDR[..23]),
        Err(WireError::TooShort {
            what: "MAD header",
            need: 24,
            have: 23
        })
    );
}

#[test]
fn dm_mad_layout() {
    let mut mad = [0u8; 256];
    mad[..24].copy_from_slice(&GET_IOC_HDR);
    mad[24..64].fill(0xee); // reserved: ignored by parse
    mad[64] = 0x42;
    mad[255] = 0x43;
    let m = DmMad::parse(&mad).unwrap();
    assert_eq!(m.header.attr_id, AttributeId::IO_CONTROLLER_PROFILE);
    assert_eq!(m.data[0], 0x42);
    assert_eq!(m.data[191], 0x43);
    let out = m.to_bytes();
    assert_eq!(out[..24], GET_IOC_HDR);
    assert!(out[24..64].iter().all(|&b| b == 0));
    assert_eq!(out[64..], mad[64..]);
    assert!(DmMad::parse(&mad[..255]).is_err());
    let req = DmMad::request(
        Method::GET,
        0x0000_0001_0000_0005,
        AttributeId::IO_CONTROLLER_PROFILE,
        1,
    );
    assert_eq!(req.to_bytes()[..24], GET_IOC_HDR);
}

#[test]
fn methods_and_statuses() {
    assert_eq!(Method::GET.response(), Method::GET_RESP);
    assert_eq!(Method::SET.response(), Method::GET_RESP);
    assert_eq!(Method::REPORT.response(), Method::REPORT_RESP);
    assert!(Method::GET_RESP.is_response());
    assert!(!Method::SET.is_response());
    // ib_dm_mad.h values.
    assert_eq!(MadStatus::UNSUPPORTED_METHOD.0, 0x0008);
    assert_eq!(MadStatus::UNSUPPORTED_METHOD_ATTR.0, 0x000c);
    assert_eq!(MadStatus::INVALID_FIELD.0, 0x001c);
    assert_eq!(MadStatus::NO_IOC.0, 0x0100);
    assert_eq!(
        MadStatus(0x000c).to_string(),
        "0x000c (unsupported method/attribute)"
    );
    assert_eq!(AttributeId(0x11).name(), Some("IOControllerProfile"));
}

#[test]
fn class_port_info_srpt() {
    let b = srpt_class_port_info();
    let c = ClassPortInfo::parse(&b).unwrap();
    assert_eq!(c.base_version, 1);
    assert_eq!(c.class_version, 1);
    assert_eq!(c.resp_time_value, 20);
    assert_eq!(c.cap_mask2, 0);
    assert_eq!(c.redirect, ClassPortAddress::default());
    let mut out = [0u8; 72];
    assert_eq!(c.emit(&mut out), Ok(72));
    assert_eq!(out, b);
}

#[test]
fn class_port_info_fields() {
    // umad_class_port_info offsets: redirect GID at 8, TC/SL/FL at 24,
    // LID 28, P_Key 30, QP 32, Q_Key 36; trap GID 40, TC/SL/FL 56,
    // LID 60, P_Key 62, HL/QP 64, Q_Key 68.
    let mut b = [0u8; 72];
    b[2..4].copy_from_slice(&0x0200u16.to_be_bytes());
    b[4..8].copy_from_slice(&((0x123u32 << 5) | 0x13).to_be_bytes());
    b[8] = 0xfe;
    b[24..28].copy_from_slice(&0x12a_bcdeu32.to_be_bytes());
    b[28..30].copy_from_slice(&7u16.to_be_bytes());
    b[30..32].copy_from_slice(&0xffffu16.to_be_bytes());
    b[32..36].copy_from_slice(&0x00_000001u32.to_be_bytes());
    b[36..40].copy_from_slice(&0x8001_0000u32.to_be_bytes());
    b[40] = 0xfe;
    b[55] = 0x01;
    b[60..62].copy_from_slice(&3u16.to_be_bytes());
    b[64..68].copy_from_slice(&0x40_000001u32.to_be_bytes());
    b[68..72].copy_from_slice(&0x8001_0000u32.to_be_bytes());
    let c = ClassPortInfo::parse(&b).unwrap();
    assert_eq!(c.cap_mask, 0x0200);
    assert_eq!(c.cap_mask2, 0x123);
    assert_eq!(c.resp_time_value, 0x13);
    assert_eq!(c.redirect.gid[0], 0xfe);
    assert_eq!(
        (c.redirect.traffic_class, c.redirect.sl, c.redirect.flow_label),
        (0x01, 0x2, 0xabcde)
    );
    assert_eq!((c.redirect.lid, c.redirect.pkey, c.redirect.qp), (7, 0xffff, 1));
    assert_eq!(c.redirect.qkey, 0x8001_0000);
    assert_eq!(c.trap.gid[15], 0x01);
    assert_eq!((c.trap.lid, c.trap.hop_limit, c.trap.qp), (3, 0x40, 1));
    let mut out = [0u8; 72];
    c.emit(&mut out).unwrap();
    assert_eq!(out, b);
}

#[test]
fn iou_info_srpt() {
    let b = srpt_iou();
    let i = IoUnitInfo::parse(&b).unwrap();
    assert_eq!(i.change_id, 1);
    assert_eq!(i.max_controllers, 16);
    assert!(!i.option_rom && !i.diag_device_id);
    assert_eq!(i.slot(1), Some(SlotState::PRESENT));
    assert_eq!(i.slot(2), Some(SlotState::NOT_INSTALLED));
    assert_eq!(i.slot(0), None);
    assert_eq!(i.slot(256), Some(SlotState::NOT_INSTALLED));
    assert_eq!(i.slot(257), None);
    assert_eq!(i.present_slots().collect::<Vec<_>>(), vec![1]);
    let mut out = [0u8; 132];
    i.emit(&mut out).unwrap();
    assert_eq!(out, b);

    let mut j = IoUnitInfo {
        max_controllers: 4,
        ..Default::default()
    };
    assert!(j.set_slot(2, SlotState::PRESENT));
    assert!(j.set_slot(3, SlotState::NO_SLOT));
    assert!(!j.set_slot(0, SlotState::PRESENT));
    assert!(!j.set_slot(257, SlotState::PRESENT));
    assert_eq!(j.controller_list[..2], [0x01, 0xf0]);
    assert_eq!(j.present_slots().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn iou_info_flags() {
    let mut b = [0u8; 132];
    b[3] = 0x01;
    assert!(IoUnitInfo::parse(&b).unwrap().option_rom);
    b[3] = 0x02;
    let i = IoUnitInfo::parse(&b).unwrap();
    assert!(i.diag_device_id && !i.option_rom);
    b[3] = 0xfc; // reserved bits only
    let i = IoUnitInfo::parse(&b).unwrap();
    assert!(!i.diag_device_id && !i.option_rom);
}

#[test]
fn ioc_profile_layout() {
    let b = ioc_profile_bytes();
    let p = IoControllerProfile::parse(&b).unwrap();
    assert_eq!(p.guid, 0x0002_c903_00ab_cdef);
    assert_eq!(p.vendor_id, 0x0002c9);
    assert_eq!(p.device_id, 0x1003);
    assert_eq!(p.device_version, 0xa0);
    assert_eq!(p.subsystem_vendor_id, 0x0002c9);
    assert_eq!(p.io_class, IoControllerProfile::SRP_IO_CLASS_R16A);
    assert_eq!(p.io_subclass, IoControllerProfile::SRP_IO_SUBCLASS);
    assert_eq!(p.protocol, IoControllerProfile::SRP_PROTOCOL);
    assert_eq!(p.protocol_version, 1);
    assert_eq!(p.send_queue_depth, 4095);
    assert_eq!(p.rdma_read_depth, 4);
    assert_eq!(p.send_size, 8260);
    assert_eq!(p.rdma_size, 1 << 20);
    assert_eq!(p.op_cap_mask, IoControllerProfile::OP_SRP_TARGET);
    assert_eq!(p.op_cap_mask, 0x2b);
    assert_eq!(p.service_entries, 1);
    assert_eq!(p.id_str(), Some("Linux SRP target"));
    let mut out = [0u8; 128];
    assert_eq!(p.emit(&mut out), Ok(128));
    assert_eq!(out, b);
}

#[test]
fn ioc_profile_kernel_vendor_quirk() {
    // ib_srpt: iocp->vendor_id = cpu_to_be32(attrs.vendor_id). For rxe
    // (vendor 0xffffff) that is 00 ff ff ff: VendorID 0x00ffff, and the
    // reserved byte holds 0xff.
    let mut b = [0u8; 128];
    b[8..12].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
    let p = IoControllerProfile::parse(&b).unwrap();
    assert_eq!(p.vendor_id, 0x00ffff);
}

#[test]
fn id_string_truncation() {
    let mut p = IoControllerProfile::default();
    p.set_id_str(&"é".repeat(40)); // 80 bytes
    let s = p.id_str().unwrap();
    assert_eq!(s.len(), 62);
    assert_eq!(p.id_string[63], 0);
}

#[test]
fn service_entries_srpt() {
    // srpt_get_svc_entries: entry 0 named "SRP.T10:%016llx" of the
    // service GUID, ID = the same GUID; entries 1-3 zero.
    let guid = 0x0000_00ff_fe00_7701u64;
    let mut b = [0u8; 192];
    b[..24].copy_from_slice(b"SRP.T10:000000fffe007701");
    b[40..48].copy_from_slice(&guid.to_be_bytes());
    let s = ServiceEntries::parse(&b).unwrap();
    assert_eq!(s.entries[0].name_str(), Some("SRP.T10:000000fffe007701"));
    assert_eq!(s.entries[0].srp_id_ext(), Some("000000fffe007701"));
    assert_eq!(s.entries[0].id, guid);
    assert_eq!(s.entries[1], ServiceEntry::default());
    assert_eq!(ServiceEntry::srp(guid, guid), s.entries[0]);
    let mut out = [0u8; 192];
    s.emit(&mut out).unwrap();
    assert_eq!(out, b);
    assert_eq!(ServiceEntry::new("other", 1).srp_id_ext(), None);
}

#[test]
fn service_entries_modifier() {
    // srp_daemon: (ioc << 16) | (end << 8) | start.
    let m = ServiceEntriesModifier::from_u32(1 << 16 | 3 << 8);
    assert_eq!(
        m,
        ServiceEntriesModifier {
            slot: 1,
            last: 3,
            first: 0
        }
    );
    assert_eq!(m.count(), Some(4));
    assert_eq!(m.to_u32(), 0x0001_0300);
    assert_eq!(ServiceEntriesModifier::from_u32(0x0001_0001).count(), None);
}

// -----------------------------------------------------------------
// Layout tables: for each structure, a byte array in which every
// non-reserved field is non-zero, read field by field through the
// table (deconstruct), written field by field into zeros (construct),
// parsed, and emitted.
// -----------------------------------------------------------------

/// Emit into a buffer of 0xa5 bytes; returns the buffer and the length
/// written.
fn emit_over_junk(f: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> (Vec<u8>, usize) {
    let mut buf = vec![0xa5u8; 300];
    let n = f(&mut buf).unwrap();
    (buf, n)
}

mod mad_header_layout {
    use super::*;
    use crate::wire::mad::mad_header as f;
    use crate::wire::{get_be16, get_be32, get_be64, get_u8, set_be16, set_be32, set_be64, set_u8};

    /// A GetResp(IOControllerProfile) answering "no IOC in slot 1".
    #[rustfmt::skip]
    const BYTES: [u8; 24] = [
        0x01, 0x06, 0x01, 0x81, // base, class, class version, GetResp
        0x01, 0x00, 0x00, 0x07, // status NO_IOC, class specific
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, // TID
        0x00, 0x11, 0x00, 0x00, // attribute ID, reserved
        0x00, 0x00, 0x00, 0x01, // attribute modifier
    ];

    fn repr() -> MadHeader {
        MadHeader {
            base_version: 1,
            mgmt_class: MgmtClass::DEVICE_MGMT,
            class_version: 1,
            method: Method::GET_RESP,
            status: MadStatus::NO_IOC,
            class_specific: 7,
            tid: 0x0000_0001_0000_0005,
            attr_id: AttributeId::IO_CONTROLLER_PROFILE,
            attr_mod: 1,
        }
    }

    #[test]
    fn deconstruct() {
        assert_eq!(get_u8(&BYTES, f::BASE_VERSION), 1);
        assert_eq!(get_u8(&BYTES, f::MGMT_CLASS), 0x06);
        assert_eq!(get_u8(&BYTES, f::CLASS_VERSION), 1);
        assert_eq!(get_u8(&BYTES, f::METHOD), 0x81);
        assert_eq!(get_be16(&BYTES, f::STATUS), 0x0100);
        assert_eq!(get_be16(&BYTES, f::CLASS_SPECIFIC), 7);
        assert_eq!(get_be64(&BYTES, f::TRANSACTION_ID), 0x0000_0001_0000_0005);
        assert_eq!(get_be16(&BYTES, f::ATTRIBUTE_ID), 0x0011);
        assert_eq!(get_be32(&BYTES, f::ATTRIBUTE_MODIFIER), 1);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::BASE_VERSION, 1);
        set_u8(&mut b, f::MGMT_CLASS, 0x06);
        set_u8(&mut b, f::CLASS_VERSION, 1);
        set_u8(&mut b, f::METHOD, 0x81);
        set_be16(&mut b, f::STATUS, 0x0100);
        set_be16(&mut b, f::CLASS_SPECIFIC, 7);
        set_be64(&mut b, f::TRANSACTION_ID, 0x0000_0001_0000_0005);
        set_be16(&mut b, f::ATTRIBUTE_ID, 0x0011);
        set_be32(&mut b, f::ATTRIBUTE_MODIFIER, 1);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(MadHeader::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod dm_mad_layout {
    use super::*;
    use crate::wire::get;
    use crate::wire::mad::dm_mad as f;

    /// Get(IOControllerProfile) with marker bytes at both ends of the
    /// data field.
    fn bytes() -> [u8; 256] {
        let mut b = [0u8; 256];
        b[..24].copy_from_slice(&GET_IOC_HDR);
        b[64] = 0x42;
        b[255] = 0x43;
        b
    }

    fn repr() -> DmMad {
        let mut m = DmMad::request(
            Method::GET,
            0x0000_0001_0000_0005,
            AttributeId::IO_CONTROLLER_PROFILE,
            1,
        );
        m.data[0] = 0x42;
        m.data[191] = 0x43;
        m
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        assert_eq!(get::<24, 256>(&b, f::HEADER), GET_IOC_HDR);
        let data: [u8; 192] = get(&b, f::DATA);
        assert_eq!((data[0], data[191]), (0x42, 0x43));
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        crate::wire::set(&mut b, f::HEADER, &GET_IOC_HDR);
        crate::wire::set(&mut b, f::DATA, &repr().data);
        assert_eq!(b, bytes());
    }

    #[test]
    fn parse() {
        assert_eq!(DmMad::parse(&bytes()), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&bytes()[..], 0xa5));
    }
}

mod class_port_info_layout {
    use super::*;
    use crate::wire::mad::{class_port_address as a, class_port_info as f};
    use crate::wire::{get, get_be16, get_be32, get_u8, set, set_be16, set_be32, set_u8};

    #[rustfmt::skip]
    const BYTES: [u8; 72] = [
        0x01, 0x01, 0x02, 0x00,                         // versions, CapabilityMask
        0x00, 0x00, 0x24, 0x73,                         // CapabilityMask2 0x123, RespTime 0x13
        // redirect: GID, TC/SL/FL, LID, P_Key, reserved + QP, Q_Key
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xc9, 0x03, 0, 0x0f, 0x12, 0x34,
        0x01, 0x2a, 0xbc, 0xde,
        0x00, 0x07, 0xff, 0xff,
        0x00, 0x00, 0x00, 0x01,
        0x80, 0x01, 0x00, 0x00,
        // trap: GID, TC/SL/FL, LID, P_Key, HopLimit + QP, Q_Key
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xc9, 0x03, 0, 0x0f, 0x56, 0x78,
        0x02, 0x30, 0x00, 0x01,
        0x00, 0x03, 0x7f, 0xff,
        0x40, 0x00, 0x00, 0x02,
        0x80, 0x01, 0x00, 0x01,
    ];

    fn repr() -> ClassPortInfo {
        ClassPortInfo {
            base_version: 1,
            class_version: 1,
            cap_mask: 0x0200,
            cap_mask2: 0x123,
            resp_time_value: 0x13,
            redirect: ClassPortAddress {
                gid: *BYTES[8..24].first_chunk().unwrap(),
                traffic_class: 0x01,
                sl: 0x2,
                flow_label: 0xabcde,
                lid: 7,
                pkey: 0xffff,
                hop_limit: 0,
                qp: 1,
                qkey: 0x8001_0000,
            },
            trap: ClassPortAddress {
                gid: *BYTES[40..56].first_chunk().unwrap(),
                traffic_class: 0x02,
                sl: 0x3,
                flow_label: 1,
                lid: 3,
                pkey: 0x7fff,
                hop_limit: 0x40,
                qp: 2,
                qkey: 0x8001_0001,
            },
        }
    }

    #[test]
    fn deconstruct() {
        let b = &BYTES;
        assert_eq!(get_u8(b, f::BASE_VERSION), 1);
        assert_eq!(get_u8(b, f::CLASS_VERSION), 1);
        assert_eq!(get_be16(b, f::CAPABILITY_MASK), 0x0200);
        assert_eq!(get_be32(b, f::CAP_MASK2_RESP_TIME), 0x123 << 5 | 0x13);
        let r: [u8; 32] = get(b, f::REDIRECT);
        assert_eq!(get::<16, 32>(&r, a::GID)[15], 0x34);
        assert_eq!(get_be32(&r, a::TC_SL_FL), 0x012a_bcde);
        assert_eq!(get_be16(&r, a::LID), 7);
        assert_eq!(get_be16(&r, a::P_KEY), 0xffff);
        assert_eq!(get_be32(&r, a::HL_QP), 1);
        assert_eq!(get_be32(&r, a::Q_KEY), 0x8001_0000);
        let t: [u8; 32] = get(b, f::TRAP);
        assert_eq!(get::<16, 32>(&t, a::GID)[15], 0x78);
        assert_eq!(get_be32(&t, a::TC_SL_FL), 0x0230_0001);
        assert_eq!(get_be16(&t, a::LID), 3);
        assert_eq!(get_be16(&t, a::P_KEY), 0x7fff);
        assert_eq!(get_be32(&t, a::HL_QP), 0x4000_0002);
        assert_eq!(get_be32(&t, a::Q_KEY), 0x8001_0001);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_u8(&mut b, f::BASE_VERSION, 1);
        set_u8(&mut b, f::CLASS_VERSION, 1);
        set_be16(&mut b, f::CAPABILITY_MASK, 0x0200);
        set_be32(&mut b, f::CAP_MASK2_RESP_TIME, 0x123 << 5 | 0x13);
        let mut r = [0u8; a::LEN];
        set(&mut r, a::GID, &BYTES[8..24]);
        set_be32(&mut r, a::TC_SL_FL, 0x012a_bcde);
        set_be16(&mut r, a::LID, 7);
        set_be16(&mut r, a::P_KEY, 0xffff);
        set_be32(&mut r, a::HL_QP, 1);
        set_be32(&mut r, a::Q_KEY, 0x8001_0000);
        set(&mut b, f::REDIRECT, &r);
        let mut t = [0u8; a::LEN];
        set(&mut t, a::GID, &BYTES[40..56]);
        set_be32(&mut t, a::TC_SL_FL, 0x0230_0001);
        set_be16(&mut t, a::LID, 3);
        set_be16(&mut t, a::P_KEY, 0x7fff);
        set_be32(&mut t, a::HL_QP, 0x4000_0002);
        set_be32(&mut t, a::Q_KEY, 0x8001_0001);
        set(&mut b, f::TRAP, &t);
        assert_eq!(b, BYTES);
    }

    #[test]
    fn parse() {
        assert_eq!(ClassPortInfo::parse(&BYTES), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&BYTES[..], 0xa5));
    }
}

mod iou_info_layout {
    use super::*;
    use crate::wire::mad::iou_info as f;
    use crate::wire::{get, get_be16, get_u8, set, set_be16, set_u8};

    /// Change ID 0x0102, 3 slots (1 present, 2 empty, 3 absent), both
    /// flags set.
    fn bytes() -> [u8; 132] {
        let mut b = [0u8; 132];
        b[..6].copy_from_slice(&[0x01, 0x02, 3, 0x03, 0x10, 0xf0]);
        b
    }

    fn repr() -> IoUnitInfo {
        let mut i = IoUnitInfo {
            change_id: 0x0102,
            max_controllers: 3,
            diag_device_id: true,
            option_rom: true,
            ..Default::default()
        };
        i.set_slot(1, SlotState::PRESENT);
        i.set_slot(3, SlotState::NO_SLOT);
        i
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        assert_eq!(get_be16(&b, f::CHANGE_ID), 0x0102);
        assert_eq!(get_u8(&b, f::MAX_CONTROLLERS), 3);
        assert_eq!(get_u8(&b, f::FLAGS), 0x03);
        assert_eq!(get::<128, 132>(&b, f::CONTROLLER_LIST)[..2], [0x10, 0xf0]);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_be16(&mut b, f::CHANGE_ID, 0x0102);
        set_u8(&mut b, f::MAX_CONTROLLERS, 3);
        set_u8(&mut b, f::FLAGS, 0x03);
        set(&mut b, f::CONTROLLER_LIST, &repr().controller_list);
        assert_eq!(b, bytes());
    }

    #[test]
    fn parse() {
        assert_eq!(IoUnitInfo::parse(&bytes()), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&bytes()[..], 0xa5));
    }
}

mod ioc_profile_layout {
    use super::*;
    use crate::wire::mad::ioc_profile as f;
    use crate::wire::{
        get, get_be16, get_be24, get_be32, get_be64, get_u8, set, set_be16, set_be24, set_be32, set_be64,
        set_u8,
    };

    /// [`ioc_profile_bytes`] with the fields it leaves zero filled in.
    fn bytes() -> [u8; 128] {
        let mut b = ioc_profile_bytes();
        b[24..28].copy_from_slice(&0x0000_0007u32.to_be_bytes()); // subsystem ID
        b[53] = 0x01; // svc_cap_mask
        b
    }

    fn repr() -> IoControllerProfile {
        let mut p = IoControllerProfile {
            guid: 0x0002_c903_00ab_cdef,
            vendor_id: 0x0002c9,
            device_id: 0x1003,
            device_version: 0xa0,
            subsystem_vendor_id: 0x0002c9,
            subsystem_id: 7,
            io_class: IoControllerProfile::SRP_IO_CLASS_R16A,
            io_subclass: IoControllerProfile::SRP_IO_SUBCLASS,
            protocol: IoControllerProfile::SRP_PROTOCOL,
            protocol_version: IoControllerProfile::SRP_PROTOCOL_VERSION,
            send_queue_depth: 4095,
            rdma_read_depth: 4,
            send_size: 8260,
            rdma_size: 1 << 20,
            op_cap_mask: IoControllerProfile::OP_SRP_TARGET,
            svc_cap_mask: 1,
            service_entries: 1,
            ..Default::default()
        };
        p.set_id_str("Linux SRP target");
        p
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        assert_eq!(get_be64(&b, f::GUID), 0x0002_c903_00ab_cdef);
        assert_eq!(get_be24(&b, f::VENDOR_ID), 0x0002c9);
        assert_eq!(get_be32(&b, f::DEVICE_ID), 0x1003);
        assert_eq!(get_be16(&b, f::DEVICE_VERSION), 0xa0);
        assert_eq!(get_be24(&b, f::SUBSYSTEM_VENDOR_ID), 0x0002c9);
        assert_eq!(get_be32(&b, f::SUBSYSTEM_ID), 7);
        assert_eq!(get_be16(&b, f::IO_CLASS), 0x0100);
        assert_eq!(get_be16(&b, f::IO_SUBCLASS), 0x609e);
        assert_eq!(get_be16(&b, f::PROTOCOL), 0x0108);
        assert_eq!(get_be16(&b, f::PROTOCOL_VERSION), 0x0001);
        assert_eq!(get_be16(&b, f::SEND_MESSAGE_QUEUE_DEPTH), 4095);
        assert_eq!(get_u8(&b, f::RDMA_READ_QUEUE_DEPTH), 4);
        assert_eq!(get_be32(&b, f::SEND_MESSAGE_SIZE), 8260);
        assert_eq!(get_be32(&b, f::RDMA_TRANSFER_SIZE), 1 << 20);
        assert_eq!(get_u8(&b, f::OP_CAP_MASK), 0x2b);
        assert_eq!(get_u8(&b, f::SVC_CAP_MASK), 1);
        assert_eq!(get_u8(&b, f::SERVICE_ENTRIES), 1);
        assert_eq!(get::<64, 128>(&b, f::ID_STRING)[..16], *b"Linux SRP target");
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        set_be64(&mut b, f::GUID, 0x0002_c903_00ab_cdef);
        set_be24(&mut b, f::VENDOR_ID, 0x0002c9);
        set_be32(&mut b, f::DEVICE_ID, 0x1003);
        set_be16(&mut b, f::DEVICE_VERSION, 0xa0);
        set_be24(&mut b, f::SUBSYSTEM_VENDOR_ID, 0x0002c9);
        set_be32(&mut b, f::SUBSYSTEM_ID, 7);
        set_be16(&mut b, f::IO_CLASS, 0x0100);
        set_be16(&mut b, f::IO_SUBCLASS, 0x609e);
        set_be16(&mut b, f::PROTOCOL, 0x0108);
        set_be16(&mut b, f::PROTOCOL_VERSION, 0x0001);
        set_be16(&mut b, f::SEND_MESSAGE_QUEUE_DEPTH, 4095);
        set_u8(&mut b, f::RDMA_READ_QUEUE_DEPTH, 4);
        set_be32(&mut b, f::SEND_MESSAGE_SIZE, 8260);
        set_be32(&mut b, f::RDMA_TRANSFER_SIZE, 1 << 20);
        set_u8(&mut b, f::OP_CAP_MASK, 0x2b);
        set_u8(&mut b, f::SVC_CAP_MASK, 1);
        set_u8(&mut b, f::SERVICE_ENTRIES, 1);
        set(&mut b, f::ID_STRING, &repr().id_string);
        assert_eq!(b, bytes());
    }

    #[test]
    fn parse() {
        assert_eq!(IoControllerProfile::parse(&bytes()), Ok(repr()));
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&bytes()[..], 0xa5));
    }
}

mod svc_entries_layout {
    use super::*;
    use crate::wire::mad::{svc_entries as f, svc_entry as e};
    use crate::wire::{get, get_be64, set, set_be64};

    const NAMES: [&str; 4] = [
        "SRP.T10:000000fffe007701",
        "SRP.T10:000000fffe007702",
        "other",
        "SRP.T10:0123456789abcdef",
    ];
    const IDS: [u64; 4] = [0x0000_00ff_fe00_7701, 0x0000_00ff_fe00_7702, 3, 4];

    fn bytes() -> [u8; 192] {
        let mut b = [0u8; 192];
        for (i, (name, id)) in NAMES.iter().zip(IDS).enumerate() {
            b[48 * i..][..name.len()].copy_from_slice(name.as_bytes());
            b[48 * i + 40..][..8].copy_from_slice(&id.to_be_bytes());
        }
        b
    }

    fn repr() -> ServiceEntries {
        ServiceEntries {
            entries: [0, 1, 2, 3].map(|i| ServiceEntry::new(NAMES[i], IDS[i])),
        }
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        for (i, f) in ServiceEntries::ENTRIES.into_iter().enumerate() {
            let entry: [u8; 48] = get(&b, f);
            let name: [u8; 40] = get(&entry, e::NAME);
            assert_eq!(&name[..NAMES[i].len()], NAMES[i].as_bytes());
            assert_eq!(get_be64(&entry, e::ID), IDS[i]);
        }
        assert_eq!(get::<48, 192>(&b, f::ENTRY_3)[..8], *b"SRP.T10:");
    }

    #[test]
    fn construct() {
        let mut b = [0u8; f::LEN];
        for (i, f) in ServiceEntries::ENTRIES.into_iter().enumerate() {
            let mut entry = [0u8; e::LEN];
            set(&mut entry, e::NAME, &ServiceEntry::new(NAMES[i], 0).name);
            set_be64(&mut entry, e::ID, IDS[i]);
            set(&mut b, f, &entry);
        }
        assert_eq!(b, bytes());
    }

    #[test]
    fn parse() {
        assert_eq!(ServiceEntries::parse(&bytes()), Ok(repr()));
        let one = ServiceEntry::parse(&bytes()[48..]).unwrap();
        assert_eq!(one, repr().entries[1]);
    }

    #[test]
    fn emit() {
        let (b, n) = emit_over_junk(|b| repr().emit(b));
        assert_eq!((&b[..n], b[n]), (&bytes()[..], 0xa5));
        let (b, n) = emit_over_junk(|b| repr().entries[3].emit(b));
        assert_eq!((&b[..n], b[n]), (&bytes()[144..], 0xa5));
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = MadHeader::parse(&b);
        let _ = DmMad::parse(&b);
        let _ = ClassPortInfo::parse(&b);
        let _ = IoUnitInfo::parse(&b);
        let _ = IoControllerProfile::parse(&b);
        let _ = ServiceEntries::parse(&b);
        let _ = ServiceEntry::parse(&b);
    }

    #[test]
    fn reparse_is_identity(b in proptest::collection::vec(any::<u8>(), 256)) {
        let m = DmMad::parse(&b).unwrap();
        prop_assert_eq!(DmMad::parse(&m.to_bytes()).unwrap(), m.clone());
        let c = ClassPortInfo::parse(&m.data).unwrap();
        let mut o = [0u8; 192];
        c.emit(&mut o).unwrap();
        prop_assert_eq!(ClassPortInfo::parse(&o).unwrap(), c);
        let i = IoUnitInfo::parse(&m.data).unwrap();
        i.emit(&mut o).unwrap();
        prop_assert_eq!(IoUnitInfo::parse(&o).unwrap(), i);
        let p = IoControllerProfile::parse(&m.data).unwrap();
        p.emit(&mut o).unwrap();
        prop_assert_eq!(IoControllerProfile::parse(&o).unwrap(), p);
        let s = ServiceEntries::parse(&m.data).unwrap();
        s.emit(&mut o).unwrap();
        prop_assert_eq!(ServiceEntries::parse(&o).unwrap(), s);
        let _ = s.entries[0].srp_id_ext();
    }
}
