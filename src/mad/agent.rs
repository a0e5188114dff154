//! The sans-I/O Device Management agent: turns a received DevMgt request
//! MAD into the response MAD, the way the kernel's ib_srpt does in
//! `srpt_mad_recv_handler` / `srpt_mgmt_method_get`, for one I/O unit with
//! one I/O controller (slot 1) offering one SRP service entry.
//!
//! No I/O: the caller receives MADs (e.g. with [`crate::rdma::umad`]),
//! calls [`DmAgent::handle`] and sends what it returns back to the
//! requester's address.

use crate::wire::mad::{
    AttributeId, ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, MadHeader, MadStatus, Method,
    MgmtClass, ServiceEntries, ServiceEntriesModifier, ServiceEntry, SlotState, MAD_LEN,
};

/// The slot our one I/O controller occupies in the IOUnitInfo controller
/// list (ib_srpt uses slot 1 as well).
pub const IOC_SLOT: u16 = 1;
/// Controller slots reported in IOUnitInfo (ib_srpt: 16). Slots
/// `2..=MAX_CONTROLLERS` are "not installed"; beyond is an invalid slot.
pub const MAX_CONTROLLERS: u8 = 16;
/// Service entries of our controller.
pub const NUM_SERVICE_ENTRIES: u8 = 1;
/// ClassPortInfo RespTimeValue (ib_srpt: `ib_set_cpi_resp_time(cif, 20)`,
/// i.e. 4.096 us * 2^20 = about 4.3 s).
pub const RESP_TIME_VALUE: u8 = 20;

/// What the agent advertises. Field names follow IBTA 16.3.3.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmConfig {
    /// IOControllerProfile GUID, the `ioc_guid` initiators put in
    /// add_target. ib_srpt uses the node GUID of its first device.
    pub ioc_guid: u64,
    /// Target port identifier extension: published as the service name
    /// `SRP.T10:<id_ext as 16 hex digits>`, which srp_daemon copies to the
    /// `id_ext=` of add_target. ib_srpt uses the node GUID here too.
    pub id_ext: u64,
    /// 24-bit IEEE OUI of the vendor (IBTA VendorID).
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_version: u16,
    /// 24 bits.
    pub subsystem_vendor_id: u32,
    pub subsystem_id: u32,
    /// ServiceID of the one service entry: the IB CM service ID initiators
    /// connect to (srp_daemon's `service_id=`). ib_srpt advertises its IB
    /// CM listen ID, `srpt_service_guid` (the node GUID); srptd advertises
    /// the `RDMA_PS_IB` service ID of its port (`driver::dm`,
    /// `docs/device-management.md`).
    pub service_id: u64,
    /// SendMessageQueueDepth: credits per channel (ib_srpt 6.1 without
    /// SRQ: 128; with SRQ: the SRQ size, 4095 by default).
    pub send_queue_depth: u16,
    /// RDMAReadQueueDepth (ib_srpt: 4).
    pub rdma_read_depth: u8,
    /// SendMessageSize: the largest it_iu_len a login gets (ib_srpt:
    /// `srp_max_req_size`, 8276 by default on 6.1). srp_daemon appends
    /// `max_it_iu_size=<this>` to add_target when the initiator's immediate
    /// data would not fit.
    pub send_size: u32,
    /// RDMATransferSize: largest data transfer per command (ib_srpt:
    /// `min(srp_max_rdma_size, 16 MiB)`, 65536 by default).
    pub rdma_size: u32,
    /// IDString (63 bytes are kept, so it stays NUL-terminated).
    pub id_string: String,
    /// IOUnitInfo ChangeID. [`DmAgent::update`] increments it.
    pub change_id: u16,
}

impl DmConfig {
    /// srptd's defaults for a device with node GUID `node_guid`: the same
    /// identities ib_srpt derives (IOC GUID, id_ext and service ID all equal
    /// to the node GUID), and the limits of `proto::LoginLimits::default()`
    /// / `proto::ChannelConfig::new` at the time of writing (128 credits,
    /// max it_iu_len 64 KiB + 68, 8 MiB per command, 4 RDMA reads). The
    /// running target builds its configuration from its live options
    /// instead (`driver::dm::dm_config`).
    pub fn for_node_guid(node_guid: u64) -> Self {
        Self {
            ioc_guid: node_guid,
            id_ext: node_guid,
            vendor_id: 0,
            device_id: 0,
            device_version: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            service_id: node_guid,
            send_queue_depth: 128,
            rdma_read_depth: 4,
            send_size: 64 * 1024 + 68,
            rdma_size: 8 << 20,
            id_string: "srptd userspace SRP target".to_owned(),
            change_id: 1,
        }
    }
}

/// RDMA/CM port space `RDMA_PS_TCP` (rdma_cma.h).
pub const RDMA_PS_TCP: u16 = 0x0106;
/// RDMA/CM port space `RDMA_PS_IB` (rdma_cma.h).
pub const RDMA_PS_IB: u16 = 0x013f;

/// The IB CM service ID under which an RDMA/CM listener on `port` in port
/// space `ps` receives connection requests (`rdma_get_service_id`:
/// `ps << 16 | port`). Only an `AF_IB` listener (port space
/// [`RDMA_PS_IB`]) accepts ib_srp's IB CM logins, whose private data is the
/// bare SRP_LOGIN_REQ without the RDMA/CM header (`cma_user_data_offset`
/// is 0 for `AF_IB`); see `docs/device-management.md`.
pub fn rdma_cm_service_id(ps: u16, port: u16) -> u64 {
    u64::from(ps) << 16 | u64::from(port)
}

/// Counters for the driver's statistics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmStats {
    /// Requests answered with status success.
    pub answered: u64,
    /// Requests answered with an error status.
    pub rejected: u64,
    /// MADs dropped without an answer (malformed, responses, other class).
    pub dropped: u64,
}

/// The DevMgt agent state: the configuration and the attributes built from
/// it.
#[derive(Debug, Clone)]
pub struct DmAgent {
    config: DmConfig,
    profile: IoControllerProfile,
    stats: DmStats,
}

impl DmAgent {
    pub fn new(config: DmConfig) -> Self {
        let profile = Self::build_profile(&config);
        Self {
            config,
            profile,
            stats: DmStats::default(),
        }
    }

    /// Replace the configuration. The ChangeID becomes one more than the
    /// current one (wrapping, and skipping 0) whatever `config.change_id`
    /// says, so that managers that cache profiles notice (IBTA 16.3.3.3).
    pub fn update(&mut self, mut config: DmConfig) {
        config.change_id = match self.config.change_id.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        self.profile = Self::build_profile(&config);
        self.config = config;
    }

    /// Apply `config` if it advertises something different from the
    /// current one (`change_id` is not compared); the ChangeID then moves
    /// as in [`DmAgent::update`]. Returns whether it changed, so that a
    /// target may call this with its live configuration whenever that may
    /// have changed without moving the ChangeID for nothing.
    pub fn reconfigure(&mut self, config: DmConfig) -> bool {
        let same = DmConfig {
            change_id: self.config.change_id,
            ..config.clone()
        } == self.config;
        if !same {
            self.update(config);
        }
        !same
    }

    pub fn config(&self) -> &DmConfig {
        &self.config
    }

    pub fn change_id(&self) -> u16 {
        self.config.change_id
    }

    pub fn stats(&self) -> DmStats {
        self.stats
    }

    /// The IOControllerProfile the agent answers for slot 1.
    pub fn profile(&self) -> &IoControllerProfile {
        &self.profile
    }

    /// The IOUnitInfo the agent answers.
    pub fn io_unit_info(&self) -> IoUnitInfo {
        let mut iou = IoUnitInfo {
            change_id: self.config.change_id,
            max_controllers: MAX_CONTROLLERS,
            ..Default::default()
        };
        iou.set_slot(IOC_SLOT, SlotState::PRESENT);
        iou
    }

    /// The service entry of our controller.
    pub fn service_entry(&self) -> ServiceEntry {
        ServiceEntry::srp(self.config.id_ext, self.config.service_id)
    }

    fn build_profile(c: &DmConfig) -> IoControllerProfile {
        let mut p = IoControllerProfile {
            guid: c.ioc_guid,
            vendor_id: c.vendor_id & 0xff_ffff,
            device_id: c.device_id,
            device_version: c.device_version,
            subsystem_vendor_id: c.subsystem_vendor_id & 0xff_ffff,
            subsystem_id: c.subsystem_id,
            io_class: IoControllerProfile::SRP_IO_CLASS_R16A,
            io_subclass: IoControllerProfile::SRP_IO_SUBCLASS,
            protocol: IoControllerProfile::SRP_PROTOCOL,
            protocol_version: IoControllerProfile::SRP_PROTOCOL_VERSION,
            send_queue_depth: c.send_queue_depth,
            rdma_read_depth: c.rdma_read_depth,
            send_size: c.send_size,
            rdma_size: c.rdma_size,
            op_cap_mask: IoControllerProfile::OP_SRP_TARGET,
            svc_cap_mask: 0,
            service_entries: NUM_SERVICE_ENTRIES,
            id_string: [0; 64],
        };
        p.set_id_str(&c.id_string);
        p
    }

    /// Answer one received MAD. Returns the 256-byte response, or `None`
    /// (with a log line) when the MAD must not be answered: shorter than a
    /// MAD, not base version 1, not DevMgt class version 1, or itself a
    /// response.
    pub fn handle(&mut self, request: &[u8]) -> Option<[u8; MAD_LEN]> {
        let mut out = [0u8; MAD_LEN];
        self.handle_into(request, &mut out).then_some(out)
    }

    /// Like [`DmAgent::handle`], writing the response into `out`; returns
    /// whether there is one (`out` is unspecified otherwise).
    pub fn handle_into(&mut self, request: &[u8], out: &mut [u8; MAD_LEN]) -> bool {
        let req = match DmMad::parse(request) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(len = request.len(), error = %e, "DevMgt: dropping malformed MAD");
                self.stats.dropped += 1;
                return false;
            }
        };
        let h = req.header;
        // The kernel MAD layer only delivers what matches our registration
        // (class 0x06, version 1, Get/Set); anything else reaching us is a
        // caller bug or a forged buffer, and a response to a non-request
        // would confuse the requester (IBTA 13.4.5: responses are never
        // answered).
        if h.base_version != MadHeader::BASE_VERSION
            || h.mgmt_class != MgmtClass::DEVICE_MGMT
            || h.class_version != DmMad::CLASS_VERSION
            || h.method.is_response()
        {
            tracing::debug!(
                base_version = h.base_version,
                class = h.mgmt_class.0,
                class_version = h.class_version,
                method = h.method.0,
                tid = h.tid,
                "DevMgt: dropping MAD that is not a DevMgt v1 request"
            );
            self.stats.dropped += 1;
            return false;
        }

        let mut rsp = DmMad::request(h.method.response(), h.tid, h.attr_id, h.attr_mod);
        rsp.header.status = match h.method {
            Method::GET => self.get(h.attr_id, h.attr_mod, &mut rsp.data),
            // ib_srpt answers every Set with "unsupported method/attribute":
            // IOUnitInfo, IOControllerProfile and ServiceEntries are Get-only
            // (IBTA table 279); ClassPortInfo is settable in IBTA but its
            // only use, setting a trap destination, is not implemented (we
            // send no traps).
            Method::SET => MadStatus::UNSUPPORTED_METHOD_ATTR,
            _ => MadStatus::UNSUPPORTED_METHOD,
        };
        if rsp.header.status.is_success() {
            self.stats.answered += 1;
        } else {
            self.stats.rejected += 1;
            tracing::debug!(
                method = h.method.0,
                attr = h.attr_id.0,
                attr_mod = h.attr_mod,
                status = %rsp.header.status,
                "DevMgt: request rejected"
            );
        }
        rsp.emit(out).is_ok()
    }

    /// Fill `data` for a Get of `attr` and return the status. On error the
    /// data stays zero.
    fn get(&self, attr: AttributeId, attr_mod: u32, data: &mut [u8; DmMad::DATA_LEN]) -> MadStatus {
        let emitted = match attr {
            AttributeId::CLASS_PORT_INFO => ClassPortInfo {
                base_version: MadHeader::BASE_VERSION,
                class_version: DmMad::CLASS_VERSION,
                resp_time_value: RESP_TIME_VALUE,
                ..Default::default()
            }
            .emit(data),
            AttributeId::IO_UNIT_INFO => self.io_unit_info().emit(data),
            AttributeId::IO_CONTROLLER_PROFILE => {
                if let Err(status) = check_slot(attr_mod) {
                    return status;
                }
                self.profile.emit(data)
            }
            AttributeId::SERVICE_ENTRIES => {
                let m = ServiceEntriesModifier::from_u32(attr_mod);
                if let Err(status) = check_slot(u32::from(m.slot)) {
                    return status;
                }
                // IBTA 16.3.3.5: entries first..=last, at most four per MAD,
                // all of them existing. ib_srpt answers a bad range with
                // NO_IOC (and accepts last = 1 with a single entry); an
                // invalid modifier is what status 0x001c is for.
                let Some(count) = m.count() else {
                    return MadStatus::INVALID_FIELD;
                };
                if count > ServiceEntries::MAX_PER_MAD || m.last >= NUM_SERVICE_ENTRIES {
                    return MadStatus::INVALID_FIELD;
                }
                let mut s = ServiceEntries::default();
                let all = [self.service_entry()];
                for (dst, src) in s
                    .entries
                    .iter_mut()
                    .zip(&all[usize::from(m.first)..=usize::from(m.last)])
                {
                    *dst = *src;
                }
                s.emit(data)
            }
            _ => return MadStatus::UNSUPPORTED_METHOD_ATTR,
        };
        match emitted {
            Ok(_) => MadStatus::SUCCESS,
            // Every attribute is smaller than the data field; keep the
            // agent total anyway.
            Err(_) => MadStatus::INVALID_FIELD,
        }
    }
}

/// ib_srpt `srpt_get_ioc`: slot 0 or beyond 16 is an invalid modifier, an
/// existing slot without a controller is NO_IOC. (ib_srpt accepts slot 2
/// as well, although its IOUnitInfo lists only slot 1 as present.)
fn check_slot(slot: u32) -> Result<(), MadStatus> {
    if slot == 0 || slot > u32::from(MAX_CONTROLLERS) {
        Err(MadStatus::INVALID_FIELD)
    } else if slot != u32::from(IOC_SLOT) {
        Err(MadStatus::NO_IOC)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GUID: u64 = 0x0000_00ff_fe00_7701;

    fn agent() -> DmAgent {
        DmAgent::new(DmConfig {
            vendor_id: 0x00_1405,
            device_id: 0x5354,
            ..DmConfig::for_node_guid(GUID)
        })
    }

    fn get(a: &mut DmAgent, method: Method, attr: AttributeId, attr_mod: u32) -> DmMad {
        let req = DmMad::request(method, 0x1234_5678_9abc_def0, attr, attr_mod).to_bytes();
        let rsp = a.handle(&req).expect("answered");
        DmMad::parse(&rsp).unwrap()
    }

    #[test]
    fn class_port_info() {
        let mut a = agent();
        let r = get(&mut a, Method::GET, AttributeId::CLASS_PORT_INFO, 0);
        assert_eq!(r.header.method, Method::GET_RESP);
        assert_eq!(r.header.status, MadStatus::SUCCESS);
        assert_eq!(r.header.tid, 0x1234_5678_9abc_def0);
        assert_eq!(r.header.attr_id, AttributeId::CLASS_PORT_INFO);
        assert_eq!(r.header.mgmt_class, MgmtClass::DEVICE_MGMT);
        // Byte for byte what srpt_get_class_port_info produces.
        let mut want = [0u8; 192];
        want[0] = 1;
        want[1] = 1;
        want[7] = 20;
        assert_eq!(r.data, want);
    }

    #[test]
    fn io_unit_info() {
        let mut a = agent();
        let r = get(&mut a, Method::GET, AttributeId::IO_UNIT_INFO, 0);
        assert_eq!(r.header.status, MadStatus::SUCCESS);
        let mut want = [0u8; 192];
        want[1] = 1; // change ID
        want[2] = 16;
        want[4] = 0x10; // slot 1 present
        assert_eq!(r.data, want);
    }

    #[test]
    fn ioc_profile() {
        let mut a = agent();
        let r = get(&mut a, Method::GET, AttributeId::IO_CONTROLLER_PROFILE, 1);
        assert_eq!(r.header.status, MadStatus::SUCCESS);
        assert_eq!(r.header.attr_mod, 1);
        let d = &r.data;
        assert_eq!(d[0..8], GUID.to_be_bytes());
        assert_eq!(d[8..12], [0x00, 0x14, 0x05, 0x00]);
        assert_eq!(d[12..16], 0x5354u32.to_be_bytes());
        assert_eq!(d[28..36], [0x01, 0x00, 0x60, 0x9e, 0x01, 0x08, 0x00, 0x01]);
        assert_eq!(d[40..42], 128u16.to_be_bytes());
        assert_eq!(d[43], 4);
        assert_eq!(d[44..48], 65604u32.to_be_bytes());
        assert_eq!(d[48..52], (8u32 << 20).to_be_bytes());
        assert_eq!(d[52..55], [0x2b, 0, 1]);
        assert_eq!(&d[64..90], b"srptd userspace SRP target");
        assert!(d[90..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ioc_profile_slots() {
        let mut a = agent();
        for (slot, status) in [
            (0, MadStatus::INVALID_FIELD),
            (2, MadStatus::NO_IOC),
            (16, MadStatus::NO_IOC),
            (17, MadStatus::INVALID_FIELD),
            (0xffff_ffff, MadStatus::INVALID_FIELD),
        ] {
            let r = get(&mut a, Method::GET, AttributeId::IO_CONTROLLER_PROFILE, slot);
            assert_eq!(r.header.status, status, "slot {slot}");
            assert_eq!(r.header.method, Method::GET_RESP);
            assert!(r.data.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn service_entries() {
        let mut a = agent();
        let m = ServiceEntriesModifier {
            slot: 1,
            last: 0,
            first: 0,
        };
        let r = get(&mut a, Method::GET, AttributeId::SERVICE_ENTRIES, m.to_u32());
        assert_eq!(r.header.status, MadStatus::SUCCESS);
        let mut want = [0u8; 192];
        want[..24].copy_from_slice(b"SRP.T10:000000fffe007701");
        want[40..48].copy_from_slice(&GUID.to_be_bytes());
        assert_eq!(r.data, want);
    }

    #[test]
    fn service_entries_ranges() {
        let mut a = agent();
        for (slot, last, first, status) in [
            (0, 0, 0, MadStatus::INVALID_FIELD),
            (17, 0, 0, MadStatus::INVALID_FIELD),
            (2, 0, 0, MadStatus::NO_IOC),
            (1, 0, 1, MadStatus::INVALID_FIELD), // first > last
            (1, 1, 0, MadStatus::INVALID_FIELD), // entry 1 does not exist
            (1, 3, 0, MadStatus::INVALID_FIELD),
            (1, 255, 0, MadStatus::INVALID_FIELD),
            (1, 0, 0, MadStatus::SUCCESS),
        ] {
            let m = ServiceEntriesModifier { slot, last, first };
            let r = get(&mut a, Method::GET, AttributeId::SERVICE_ENTRIES, m.to_u32());
            assert_eq!(r.header.status, status, "{m:?}");
        }
    }

    #[test]
    fn set_and_other_methods() {
        let mut a = agent();
        let r = get(&mut a, Method::SET, AttributeId::CLASS_PORT_INFO, 0);
        assert_eq!(r.header.method, Method::GET_RESP);
        assert_eq!(r.header.status, MadStatus::UNSUPPORTED_METHOD_ATTR);
        let r = get(&mut a, Method::SET, AttributeId::IO_UNIT_INFO, 0);
        assert_eq!(r.header.status, MadStatus::UNSUPPORTED_METHOD_ATTR);
        let r = get(&mut a, Method::REPORT, AttributeId::IO_UNIT_INFO, 0);
        assert_eq!(r.header.method, Method::REPORT_RESP);
        assert_eq!(r.header.status, MadStatus::UNSUPPORTED_METHOD);
        let r = get(&mut a, Method(0x12), AttributeId::IO_UNIT_INFO, 0);
        assert_eq!(r.header.method, Method(0x92));
        assert_eq!(r.header.status, MadStatus::UNSUPPORTED_METHOD);
        for attr in [
            AttributeId::NOTICE,
            AttributeId::DIAGNOSTIC_TIMEOUT,
            AttributeId::DIAG_CODE,
            AttributeId(0xffff),
        ] {
            let r = get(&mut a, Method::GET, attr, 0);
            assert_eq!(r.header.status, MadStatus::UNSUPPORTED_METHOD_ATTR);
        }
        assert_eq!(
            a.stats(),
            DmStats {
                answered: 0,
                rejected: 8,
                dropped: 0
            }
        );
    }

    #[test]
    fn not_answered() {
        let mut a = agent();
        let good = DmMad::request(Method::GET, 1, AttributeId::IO_UNIT_INFO, 0).to_bytes();
        assert!(a.handle(&good).is_some());
        assert!(a.handle(&good[..255]).is_none());
        assert!(a.handle(&[]).is_none());
        for (i, v) in [(0, 2u8), (1, 0x03), (2, 2), (3, 0x81)] {
            let mut b = good;
            b[i] = v;
            assert!(a.handle(&b).is_none(), "byte {i} = {v:#x}");
        }
        assert_eq!(a.stats().dropped, 6);
        assert_eq!(a.stats().answered, 1);
    }

    #[test]
    fn service_ids() {
        assert_eq!(rdma_cm_service_id(RDMA_PS_TCP, 5555), 0x0000_0000_0106_15b3);
        assert_eq!(rdma_cm_service_id(RDMA_PS_IB, 5555), 0x0000_0000_013f_15b3);
    }

    #[test]
    fn update_bumps_change_id() {
        let mut a = agent();
        assert_eq!(a.change_id(), 1);
        let mut c = a.config().clone();
        c.send_size = 4096;
        c.change_id = 77; // ignored
        a.update(c.clone());
        assert_eq!(a.change_id(), 2);
        assert_eq!(a.profile().send_size, 4096);
        let r = get(&mut a, Method::GET, AttributeId::IO_UNIT_INFO, 0);
        assert_eq!(r.data[..2], [0, 2]);
        let mut a = DmAgent::new(DmConfig {
            change_id: 0xffff,
            ..c.clone()
        });
        a.update(c);
        assert_eq!(a.change_id(), 1);
    }

    #[test]
    fn reconfigure_moves_change_id_only_on_change() {
        let mut a = agent();
        let same = DmConfig {
            change_id: 9, // ignored
            ..a.config().clone()
        };
        assert!(!a.reconfigure(same));
        assert_eq!(a.change_id(), 1);
        let c = DmConfig {
            send_queue_depth: 64,
            ..a.config().clone()
        };
        assert!(a.reconfigure(c.clone()));
        assert_eq!(a.change_id(), 2);
        assert_eq!(a.profile().send_queue_depth, 64);
        assert!(!a.reconfigure(c));
        assert_eq!(a.change_id(), 2);
    }

    proptest! {
        #[test]
        fn random_mads_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = agent().handle(&b);
        }

        #[test]
        fn random_dm_gets_answer(method in any::<u8>(), attr in any::<u16>(), attr_mod in any::<u32>(), tid in any::<u64>()) {
            let mut a = agent();
            let req = DmMad::request(Method(method), tid, AttributeId(attr), attr_mod).to_bytes();
            let rsp = a.handle(&req);
            prop_assert_eq!(rsp.is_some(), method & 0x80 == 0);
            if let Some(rsp) = rsp {
                let r = DmMad::parse(&rsp).unwrap();
                prop_assert_eq!(r.header.tid, tid);
                prop_assert!(r.header.method.is_response());
                prop_assert_eq!(r.header.attr_id, AttributeId(attr));
            }
        }
    }
}
