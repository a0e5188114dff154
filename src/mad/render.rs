//! What `srptd dm-query` prints: the text report ([`fmt::Display`] of a
//! [`DmReport`]), the raw dump, the probe lines, and the JSON report
//! ([`DmReport::to_json`]).
//!
//! The JSON is an interface: `tests/vm/dm.sh` reads it with `jq` (e.g.
//! `.controllers[0].profile.send_size`, `.add_target_rdma_cm[0]`,
//! `.transcript[].data`) and compares srptd's answers with the kernel
//! target's. Field names, nesting, numbers and the hex strings (width
//! included) must not change; the tests compare with `src/mad/testdata/`.

use std::fmt;

use crate::mad::query::{AttrError, DmReport};
use crate::wire::hex;
use crate::wire::mad::{DmMad, IoControllerProfile, SlotState};

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
    /// A JSON rendering (hand-written: serde is not a dependency).
    pub fn to_json(&self) -> String {
        let mut j = String::from("{");
        let field = |j: &mut String, k: &str, v: String| {
            if !j.ends_with('{') {
                j.push(',');
            }
            j.push_str(&json_str(k));
            j.push(':');
            j.push_str(&v);
        };
        field(
            &mut j,
            "dest_gid",
            self.dest_gid
                .as_ref()
                .map_or("null".into(), |g| json_str(&gid_string(g))),
        );
        field(&mut j, "dest_lid", self.dest_lid.to_string());
        field(&mut j, "pkey", json_str(&format!("{:04x}", self.pkey)));
        field(
            &mut j,
            "class_port_info",
            json_result(&self.class_port_info, |c| {
                format!(
                    "{{\"base_version\":{},\"class_version\":{},\"cap_mask\":{},\"cap_mask2\":{},\"resp_time_value\":{}}}",
                    c.base_version, c.class_version, c.cap_mask, c.cap_mask2, c.resp_time_value
                )
            }),
        );
        field(
            &mut j,
            "io_unit_info",
            json_result(&self.io_unit_info, |i| {
                let slots: Vec<String> = (1..=u16::from(i.max_controllers))
                    .map(|s| i.slot(s).unwrap_or(SlotState::NO_SLOT).0.to_string())
                    .collect();
                format!(
                    "{{\"change_id\":{},\"max_controllers\":{},\"option_rom\":{},\"diag_device_id\":{},\"slots\":[{}]}}",
                    i.change_id,
                    i.max_controllers,
                    i.option_rom,
                    i.diag_device_id,
                    slots.join(",")
                )
            }),
        );
        let ctrls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| {
                let services: Vec<String> = c
                    .services
                    .iter()
                    .map(|s| {
                        format!(
                            "{{\"name\":{},\"service_id\":{}}}",
                            json_str(s.name_str().unwrap_or("")),
                            json_str(&format!("{:016x}", s.id))
                        )
                    })
                    .collect();
                format!(
                    "{{\"slot\":{},\"profile\":{},\"services\":[{}],\"services_error\":{}}}",
                    c.slot,
                    json_result(&c.profile, profile_json),
                    services.join(","),
                    c.services_error
                        .as_ref()
                        .map_or("null".into(), |e| json_str(&e.to_string()))
                )
            })
            .collect();
        field(&mut j, "controllers", format!("[{}]", ctrls.join(",")));
        let targets: Vec<String> = self.add_target_strings().iter().map(|s| json_str(s)).collect();
        field(&mut j, "add_target", format!("[{}]", targets.join(",")));
        let targets: Vec<String> = self
            .rdma_cm_add_target_strings()
            .iter()
            .map(|s| json_str(s))
            .collect();
        field(&mut j, "add_target_rdma_cm", format!("[{}]", targets.join(",")));
        let ex: Vec<String> = self
            .transcript
            .iter()
            .map(|e| {
                format!(
                    "{{\"attr_id\":{},\"attr_mod\":{},\"status\":{},\"data\":{}}}",
                    json_str(&format!("{:04x}", e.attr_id.0)),
                    json_str(&format!("{:08x}", e.attr_mod)),
                    e.status
                        .map_or("null".into(), |s| json_str(&format!("{:04x}", s.0))),
                    json_str(&hex(&e.data))
                )
            })
            .collect();
        field(&mut j, "transcript", format!("[{}]", ex.join(",")));
        j.push('}');
        j
    }
}

fn profile_json(p: &IoControllerProfile) -> String {
    format!(
        concat!(
            "{{\"guid\":{},\"vendor_id\":{},\"device_id\":{},\"device_version\":{},",
            "\"subsystem_vendor_id\":{},\"subsystem_id\":{},\"io_class\":{},\"io_subclass\":{},",
            "\"protocol\":{},\"protocol_version\":{},\"send_queue_depth\":{},\"rdma_read_depth\":{},",
            "\"send_size\":{},\"rdma_size\":{},\"op_cap_mask\":{},\"svc_cap_mask\":{},",
            "\"service_entries\":{},\"id_string\":{}}}"
        ),
        json_str(&format!("{:016x}", p.guid)),
        json_str(&format!("{:06x}", p.vendor_id)),
        json_str(&format!("{:08x}", p.device_id)),
        json_str(&format!("{:04x}", p.device_version)),
        json_str(&format!("{:06x}", p.subsystem_vendor_id)),
        json_str(&format!("{:08x}", p.subsystem_id)),
        json_str(&format!("{:04x}", p.io_class)),
        json_str(&format!("{:04x}", p.io_subclass)),
        json_str(&format!("{:04x}", p.protocol)),
        json_str(&format!("{:04x}", p.protocol_version)),
        p.send_queue_depth,
        p.rdma_read_depth,
        p.send_size,
        p.rdma_size,
        json_str(&format!("{:02x}", p.op_cap_mask)),
        json_str(&format!("{:02x}", p.svc_cap_mask)),
        p.service_entries,
        json_str(&String::from_utf8_lossy(
            &p.id_string[..p.id_string.iter().position(|&b| b == 0).unwrap_or(64)]
        )),
    )
}

fn json_result<T>(r: &Result<T, AttrError>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("{{\"error\":{}}}", json_str(&e.to_string())),
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if u32::from(c) < 0x20 => o.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => o.push(c),
        }
    }
    o.push('"');
    o
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

    fn golden(name: &str, ext: &str) -> String {
        let path = format!("{}/src/mad/testdata/{name}.{ext}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The renderings of the canned reports equal `testdata/`, written by
    /// this renderer.
    #[test]
    fn golden_renderings() {
        for (name, r) in canned_reports() {
            assert_eq!(r.to_json() + "\n", golden(name, "json"), "{name}.json");
            assert_eq!(r.to_string(), golden(name, "txt"), "{name}.txt");
            assert_eq!(r.raw_dump(), golden(name, "raw"), "{name}.raw");
        }
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
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
