//! What `srptd dm-query` prints: the text report ([`fmt::Display`] of a
//! [`DmReport`]), the raw dump, the probe lines, and the JSON report
//! ([`DmReport::to_json`]), written by `serde_json` from the view structs
//! below.
//!
//! The JSON is an interface: `tests/vm/dm.sh` reads it with `jq` (e.g.
//! `.controllers[0].profile.send_size`, `.add_target_rdma_cm[0]`,
//! `.transcript[].data`) and compares srptd's answers with the kernel
//! target's. Field names, nesting, numbers and the hex strings (width
//! included) must not change; the tests compare with the output of the
//! former hand-written renderer kept in `src/mad/testdata/`.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::mad::query::{AttrError, ControllerReport, DmReport, Exchange};
use crate::wire::hex;
use crate::wire::mad::{ClassPortInfo, DmMad, IoControllerProfile, IoUnitInfo, ServiceEntry, SlotState};

/// A GID as in sysfs / `ip -6`: eight groups of four hex digits.
pub fn gid_string(g: &[u8; 16]) -> String {
    g.chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

impl DmReport {
    /// The JSON report, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ReportJson::from(self)).expect("the JSON views have only string keys")
    }
}

/// A number as a JSON string of at least `W` lowercase hex digits (IDs,
/// GUIDs, masks and statuses, as ib_srpt's sysfs and srp_daemon print
/// them).
#[derive(Debug, Clone, Copy)]
struct Hex<const W: usize>(u64);

impl<const W: usize> Serialize for Hex<W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        if W > 16 {
            return s.collect_str(&format_args!("{:0w$x}", self.0, w = W));
        }
        // What `format!("{:0W$x}")` gives, without the formatting machinery
        // (a report holds thousands of these).
        let mut b = [b'0'; 16];
        let n = (16 - self.0.leading_zeros() as usize / 4).max(W).max(1);
        for (i, d) in b[16 - n..].iter_mut().rev().enumerate() {
            *d = DIGITS[(self.0 >> (4 * i) & 0xf) as usize];
        }
        s.serialize_str(std::str::from_utf8(&b[16 - n..]).expect("hex digits are ASCII"))
    }
}

/// An attribute, or `{"error": "<why it is missing>"}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OrError<T> {
    Ok(T),
    Err { error: String },
}

impl<'a, T: 'a, V: From<&'a T>> From<&'a Result<T, AttrError>> for OrError<V> {
    fn from(r: &'a Result<T, AttrError>) -> Self {
        match r {
            Ok(v) => Self::Ok(V::from(v)),
            Err(e) => Self::Err { error: e.to_string() },
        }
    }
}

#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    /// [`gid_string`] form.
    dest_gid: Option<String>,
    dest_lid: u16,
    pkey: Hex<4>,
    class_port_info: OrError<ClassPortInfoJson>,
    io_unit_info: OrError<IoUnitInfoJson>,
    controllers: Vec<ControllerJson<'a>>,
    add_target: Vec<String>,
    add_target_rdma_cm: Vec<String>,
    transcript: Vec<ExchangeJson>,
}

impl<'a> From<&'a DmReport> for ReportJson<'a> {
    fn from(r: &'a DmReport) -> Self {
        Self {
            dest_gid: r.dest_gid.as_ref().map(gid_string),
            dest_lid: r.dest_lid,
            pkey: Hex(r.pkey.into()),
            class_port_info: (&r.class_port_info).into(),
            io_unit_info: (&r.io_unit_info).into(),
            controllers: r.controllers.iter().map(ControllerJson::from).collect(),
            add_target: r.add_target_strings(),
            add_target_rdma_cm: r.rdma_cm_add_target_strings(),
            transcript: r.transcript.iter().map(ExchangeJson::from).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ClassPortInfoJson {
    base_version: u8,
    class_version: u8,
    cap_mask: u16,
    cap_mask2: u32,
    resp_time_value: u8,
}

impl From<&ClassPortInfo> for ClassPortInfoJson {
    fn from(c: &ClassPortInfo) -> Self {
        Self {
            base_version: c.base_version,
            class_version: c.class_version,
            cap_mask: c.cap_mask,
            cap_mask2: c.cap_mask2,
            resp_time_value: c.resp_time_value,
        }
    }
}

#[derive(Debug, Serialize)]
struct IoUnitInfoJson {
    change_id: u16,
    max_controllers: u8,
    option_rom: bool,
    diag_device_id: bool,
    /// The state of slots 1..=max_controllers ([`SlotState`] values).
    slots: Vec<u8>,
}

impl From<&IoUnitInfo> for IoUnitInfoJson {
    fn from(i: &IoUnitInfo) -> Self {
        Self {
            change_id: i.change_id,
            max_controllers: i.max_controllers,
            option_rom: i.option_rom,
            diag_device_id: i.diag_device_id,
            slots: (1..=u16::from(i.max_controllers))
                .map(|s| i.slot(s).unwrap_or(SlotState::NO_SLOT).0)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ControllerJson<'a> {
    slot: u16,
    profile: OrError<ProfileJson>,
    services: Vec<ServiceJson<'a>>,
    services_error: Option<String>,
}

impl<'a> From<&'a ControllerReport> for ControllerJson<'a> {
    fn from(c: &'a ControllerReport) -> Self {
        Self {
            slot: c.slot,
            profile: (&c.profile).into(),
            services: c.services.iter().map(ServiceJson::from).collect(),
            services_error: c.services_error.as_ref().map(AttrError::to_string),
        }
    }
}

#[derive(Debug, Serialize)]
struct ProfileJson {
    guid: Hex<16>,
    vendor_id: Hex<6>,
    device_id: Hex<8>,
    device_version: Hex<4>,
    subsystem_vendor_id: Hex<6>,
    subsystem_id: Hex<8>,
    io_class: Hex<4>,
    io_subclass: Hex<4>,
    protocol: Hex<4>,
    protocol_version: Hex<4>,
    send_queue_depth: u16,
    rdma_read_depth: u8,
    send_size: u32,
    rdma_size: u32,
    op_cap_mask: Hex<2>,
    svc_cap_mask: Hex<2>,
    service_entries: u8,
    /// Up to the first NUL; bytes that are not UTF-8 become U+FFFD.
    id_string: String,
}

impl From<&IoControllerProfile> for ProfileJson {
    fn from(p: &IoControllerProfile) -> Self {
        let id_len = p
            .id_string
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(p.id_string.len());
        Self {
            guid: Hex(p.guid),
            vendor_id: Hex(p.vendor_id.into()),
            device_id: Hex(p.device_id.into()),
            device_version: Hex(p.device_version.into()),
            subsystem_vendor_id: Hex(p.subsystem_vendor_id.into()),
            subsystem_id: Hex(p.subsystem_id.into()),
            io_class: Hex(p.io_class.into()),
            io_subclass: Hex(p.io_subclass.into()),
            protocol: Hex(p.protocol.into()),
            protocol_version: Hex(p.protocol_version.into()),
            send_queue_depth: p.send_queue_depth,
            rdma_read_depth: p.rdma_read_depth,
            send_size: p.send_size,
            rdma_size: p.rdma_size,
            op_cap_mask: Hex(p.op_cap_mask.into()),
            svc_cap_mask: Hex(p.svc_cap_mask.into()),
            service_entries: p.service_entries,
            id_string: String::from_utf8_lossy(&p.id_string[..id_len]).into_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ServiceJson<'a> {
    /// Up to the first NUL; `""` when that is not UTF-8.
    name: &'a str,
    service_id: Hex<16>,
}

impl<'a> From<&'a ServiceEntry> for ServiceJson<'a> {
    fn from(s: &'a ServiceEntry) -> Self {
        Self {
            name: s.name_str().unwrap_or(""),
            service_id: Hex(s.id),
        }
    }
}

#[derive(Debug, Serialize)]
struct ExchangeJson {
    attr_id: Hex<4>,
    attr_mod: Hex<8>,
    /// `null`: no answer.
    status: Option<Hex<4>>,
    /// The 192 bytes of attribute data, as 384 hex digits.
    data: String,
}

impl From<&Exchange> for ExchangeJson {
    fn from(e: &Exchange) -> Self {
        Self {
            attr_id: Hex(e.attr_id.0.into()),
            attr_mod: Hex(e.attr_mod.into()),
            status: e.status.map(|s| Hex(s.0.into())),
            data: hex(&e.data),
        }
    }
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

impl DmReport {
    /// Every exchange's status and attribute data as a hex dump (16 bytes
    /// a line), for comparing responders byte by byte.
    pub fn raw_dump(&self) -> String {
        let mut o = String::new();
        for e in &self.transcript {
            let status = e.status.map_or("none".to_owned(), |s| format!("{:04x}", s.0));
            o.push_str(&format!(
                "raw attr {:04x} mod {:08x} status {status}:\n",
                e.attr_id.0, e.attr_mod
            ));
            for (i, chunk) in e.data.chunks(16).enumerate() {
                let h: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                o.push_str(&format!("  {:3}: {}\n", i * 16, h.join(" ")));
            }
        }
        o
    }
}

impl fmt::Display for DmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest_gid {
            Some(g) => writeln!(
                f,
                "Device management of GID {} (LID {:#06x})",
                gid_string(g),
                self.dest_lid
            )?,
            None => writeln!(f, "Device management of LID {:#06x}", self.dest_lid)?,
        }
        match &self.class_port_info {
            Ok(c) => writeln!(
                f,
                "ClassPortInfo: base version {}, class version {}, capability mask {:#06x}, resp time value {}",
                c.base_version, c.class_version, c.cap_mask, c.resp_time_value
            )?,
            Err(e) => writeln!(f, "ClassPortInfo: {e}")?,
        }
        let iou = match &self.io_unit_info {
            Ok(i) => i,
            Err(e) => return writeln!(f, "IOUnitInfo: {e}"),
        };
        writeln!(f, "IO Unit Info:")?;
        writeln!(f, "    change ID:       {:04x}", iou.change_id)?;
        writeln!(f, "    max controllers: {:#04x}", iou.max_controllers)?;
        writeln!(
            f,
            "    option ROM:      {}",
            if iou.option_rom { "yes" } else { "no" }
        )?;
        for slot in 1..=u16::from(iou.max_controllers) {
            let s = iou.slot(slot).unwrap_or(SlotState::NO_SLOT);
            let name = match s {
                SlotState::NOT_INSTALLED => "not installed",
                SlotState::PRESENT => "present",
                SlotState::NO_SLOT => "no slot",
                _ => "<unknown>",
            };
            writeln!(f, "    controller[{slot:3}]: {name}")?;
        }
        for c in &self.controllers {
            writeln!(f)?;
            writeln!(f, "    controller[{:3}]", c.slot)?;
            let p = match &c.profile {
                Ok(p) => p,
                Err(e) => {
                    writeln!(f, "        IOControllerProfile: {e}")?;
                    continue;
                }
            };
            writeln!(f, "        GUID:             {:016x}", p.guid)?;
            writeln!(f, "        vendor ID:        {:06x}", p.vendor_id)?;
            writeln!(f, "        device ID:        {:06x}", p.device_id)?;
            writeln!(f, "        device version:   {:04x}", p.device_version)?;
            writeln!(
                f,
                "        subsystem:        {:06x}/{:08x}",
                p.subsystem_vendor_id, p.subsystem_id
            )?;
            writeln!(
                f,
                "        IO class:         {:04x} subclass {:04x} protocol {:04x} version {:04x}",
                p.io_class, p.io_subclass, p.protocol, p.protocol_version
            )?;
            writeln!(f, "        send queue depth: {}", p.send_queue_depth)?;
            writeln!(f, "        RDMA read depth:  {}", p.rdma_read_depth)?;
            writeln!(f, "        send size:        {}", p.send_size)?;
            writeln!(f, "        RDMA size:        {}", p.rdma_size)?;
            writeln!(f, "        op cap mask:      {:#04x}", p.op_cap_mask)?;
            writeln!(
                f,
                "        ID:               {}",
                p.id_str().unwrap_or("<not UTF-8>")
            )?;
            writeln!(f, "        service entries:  {}", p.service_entries)?;
            for (i, s) in c.services.iter().enumerate() {
                writeln!(
                    f,
                    "            service[{i:3}]: {:016x} / {}",
                    s.id,
                    s.name_str().unwrap_or("<not UTF-8>")
                )?;
            }
            if let Some(e) = &c.services_error {
                writeln!(f, "            ServiceEntries: {e}")?;
            }
        }
        let ib = self.add_target_strings();
        let cm = self.rdma_cm_add_target_strings();
        if !ib.is_empty() || !cm.is_empty() {
            writeln!(f)?;
        }
        for t in ib {
            writeln!(f, "add_target (IB CM, as srp_daemon): {t}")?;
        }
        for t in cm {
            writeln!(f, "add_target (RDMA/CM, RoCE or IPoIB): {t}")?;
        }
        Ok(())
    }
}

/// One line per probe answer: method, status and the first data bytes.
pub fn probe_line(name: &str, answer: Option<&DmMad>) -> String {
    match answer {
        Some(m) => format!(
            "probe {name:34} -> method {:#04x} status {:04x} data[0..8] {:02x?}",
            m.header.method.0,
            m.header.status.0,
            &m.data[..8]
        ),
        None => format!("probe {name:34} -> no answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mad::agent::{DmAgent, DmConfig};
    use crate::mad::fixtures::canned_reports;
    use crate::wire::mad::{AttributeId, Method};
    use serde_json::Value;

    fn golden(name: &str, ext: &str) -> String {
        let path = format!("{}/src/mad/testdata/{name}.{ext}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The serde JSON equals, byte for byte, what the hand-written
    /// renderer printed for the same reports (`testdata/*.json`, written
    /// by it in commit "mad: golden JSON and text of canned DmReports").
    /// One exception, `control_chars`: serde_json escapes 0x08 and 0x0c as
    /// `\b` and `\f` where the old code wrote `\u0008` and `\u000c`; that
    /// one must parse to the same JSON value, and differ only there.
    #[test]
    fn json_equals_hand_written() {
        for (name, r) in canned_reports() {
            let old = golden(name, "json");
            let new = r.to_json() + "\n";
            if name == "control_chars" {
                assert_ne!(new, old);
                assert_eq!(
                    serde_json::from_str::<Value>(&new).unwrap(),
                    serde_json::from_str::<Value>(&old).unwrap()
                );
                let old = old.replace("\\u0008", "\\b").replace("\\u000c", "\\f");
                assert_eq!(new, old, "{name}.json");
            } else {
                assert_eq!(new, old, "{name}.json");
            }
        }
    }

    /// Text and raw dump: unchanged.
    #[test]
    fn text_equals_former() {
        for (name, r) in canned_reports() {
            assert_eq!(r.to_string(), golden(name, "txt"), "{name}.txt");
            assert_eq!(r.raw_dump(), golden(name, "raw"), "{name}.raw");
        }
    }

    /// Every path `tests/vm/dm.sh` reads, with the JSON type it expects.
    #[test]
    fn paths_dm_sh_reads() {
        let (_, r) = canned_reports()
            .into_iter()
            .find(|(n, _)| *n == "srptd_roce")
            .unwrap();
        let j: Value = serde_json::from_str(&r.to_json()).unwrap();
        let at = |p: &str| j.pointer(p).unwrap_or_else(|| panic!("no {p}")).clone();
        assert_eq!(j["controllers"].as_array().unwrap().len(), 1);
        assert_eq!(at("/controllers/0/slot"), 1);
        assert_eq!(at("/io_unit_info/slots/0"), 1);
        assert_eq!(at("/io_unit_info/change_id"), 0x5a3c);
        assert_eq!(at("/controllers/0/profile/guid"), "0002c903000a0b0c");
        assert_eq!(at("/controllers/0/services/0/name"), "SRP.T10:0002c903000a0b0c");
        assert_eq!(at("/controllers/0/services/0/service_id"), "00000000013f15b3");
        assert_eq!(at("/controllers/0/profile/send_size"), 4164);
        assert_eq!(at("/controllers/0/profile/send_queue_depth"), 96);
        assert_eq!(at("/controllers/0/profile/rdma_size"), 512 << 10);
        assert_eq!(at("/controllers/0/profile/rdma_read_depth"), 16);
        assert_eq!(at("/controllers/0/profile/vendor_id"), "001405");
        for (k, v) in [
            ("io_class", "0100"),
            ("io_subclass", "609e"),
            ("protocol", "0108"),
            ("protocol_version", "0001"),
            ("op_cap_mask", "2b"),
        ] {
            assert_eq!(at(&format!("/controllers/0/profile/{k}")), v);
        }
        assert_eq!(at("/controllers/0/profile/service_entries"), 1);
        assert_eq!(
            at("/add_target/0"),
            "id_ext=0002c903000a0b0c,ioc_guid=0002c903000a0b0c,dgid=fe800000000000000002c903000a0b0c,\
             pkey=ffff,service_id=00000000013f15b3,max_it_iu_size=4164"
        );
        assert_eq!(
            at("/add_target_rdma_cm/0"),
            "id_ext=0002c903000a0b0c,ioc_guid=0002c903000a0b0c,dest=<target IP>:5555,max_it_iu_size=4164"
        );
        let t = j["transcript"].as_array().unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[3]["attr_id"], "0012");
        assert_eq!(t[3]["attr_mod"], "00010000");
        assert_eq!(t[3]["status"], "0000");
        assert_eq!(t[3]["data"].as_str().unwrap().len(), 2 * 192);
    }

    #[test]
    fn hex_width_is_a_minimum() {
        for v in [0, 1, 0xb, 0xff, 0x100, 0x1234, 0xdead_beef, 1 << 63, u64::MAX] {
            assert_eq!(
                serde_json::to_string(&Hex::<2>(v)).unwrap(),
                format!("\"{v:02x}\"")
            );
            assert_eq!(
                serde_json::to_string(&Hex::<6>(v)).unwrap(),
                format!("\"{v:06x}\"")
            );
            assert_eq!(
                serde_json::to_string(&Hex::<16>(v)).unwrap(),
                format!("\"{v:016x}\"")
            );
        }
        assert_eq!(serde_json::to_string(&Hex::<4>(0xb)).unwrap(), "\"000b\"");
        assert_eq!(serde_json::to_string(&Hex::<2>(0x1234)).unwrap(), "\"1234\"");
        assert_eq!(
            serde_json::to_string(&Hex::<16>(u64::MAX)).unwrap(),
            "\"ffffffffffffffff\""
        );
    }

    #[test]
    fn probe_lines() {
        let mut a = DmAgent::new(DmConfig::for_node_guid(0x0000_00ff_fe00_7701));
        let req = DmMad::request(Method::GET, 1, AttributeId::IO_UNIT_INFO, 0).to_bytes();
        let ans = DmMad::parse(&a.handle(&req).unwrap()).unwrap();
        assert_eq!(
            probe_line("Get IOUnitInfo", Some(&ans)),
            "probe Get IOUnitInfo                     -> method 0x81 status 0000 data[0..8] [00, 01, 10, 00, 10, 00, 00, 00]"
        );
        assert_eq!(
            probe_line("x", None),
            "probe x                                  -> no answer"
        );
    }
}
