//! The tables `srptd ctl` prints from the results of the admin calls
//! (`--json` prints the results themselves).

use serde_json::Value;
use std::fmt::Write;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Bytes as binary units (`64.0 MiB`).
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<String> = cells.zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    };
    line(&mut out, &mut header.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

/// `srptd ctl status`.
pub fn status(v: &Value) -> String {
    let mut out = String::new();
    let devices = match v["devices"].as_array() {
        Some(a) if !a.is_empty() => a.iter().map(s).collect::<Vec<_>>().join(", "),
        _ => "all".into(),
    };
    let _ = writeln!(
        out,
        "srptd {}, up {} s{}",
        s(&v["version"]),
        u(&v["uptime_s"]),
        if v["shutting_down"] == Value::Bool(true) {
            ", shutting down"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "identity   id_ext={} ioc_guid={} port={}",
        s(&v["id_ext"]),
        s(&v["ioc_guid"]),
        s(&v["port"])
    );
    let _ = writeln!(out, "devices    {devices}");
    let _ = writeln!(out, "luns       {}", u(&v["luns"]));
    let _ = writeln!(
        out,
        "sessions   {} ({} channels)",
        u(&v["sessions"]),
        u(&v["channels"])
    );
    let _ = writeln!(
        out,
        "memory     {} of {}",
        bytes(u(&v["channel_memory"])),
        bytes(u(&v["channel_memory_budget"]))
    );
    let _ = writeln!(
        out,
        "logins     {} accepted, {} rejected",
        u(&v["logins"]),
        u(&v["rejects"])
    );
    out
}

/// `srptd ctl sessions`: one row per channel.
pub fn sessions(v: &Value) -> String {
    let mut rows = Vec::new();
    for sess in v.as_array().into_iter().flatten() {
        for ch in sess["channels"].as_array().into_iter().flatten() {
            let st = &ch["stats"];
            rows.push(vec![
                s(&sess["initiator"]),
                s(&ch["key"]),
                s(&ch["device"]),
                s(&ch["peer"]),
                s(&ch["in_flight"]),
                format!("{}/{}", u(&ch["credits_in_use"]), u(&ch["credits_granted"])),
                u(&st["commands"]).to_string(),
                bytes(u(&st["bytes_out"])),
                bytes(u(&st["bytes_in"])),
            ]);
        }
    }
    if rows.is_empty() {
        return "no sessions\n".into();
    }
    table(
        &[
            "INITIATOR",
            "CHANNEL",
            "DEVICE",
            "PEER",
            "IN FLIGHT",
            "CREDITS",
            "COMMANDS",
            "WRITTEN",
            "READ",
        ],
        &rows,
    )
}

/// `srptd ctl luns`.
pub fn luns(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            vec![
                s(&l["lun"]),
                s(&l["backstore"]),
                bytes(u(&l["bytes"])),
                s(&l["block_size"]),
                if l["read_only"] == Value::Bool(true) {
                    "ro"
                } else {
                    "rw"
                }
                .into(),
                s(&l["serial"]),
            ]
        })
        .collect();
    table(&["LUN", "BACKSTORE", "SIZE", "BLOCK", "MODE", "SERIAL"], &rows)
}

/// The answer to a LUN or ACL change.
pub fn applied(v: &Value) -> String {
    let list = |k: &str| {
        v[k].as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let mut parts = Vec::new();
    for (k, what) in [
        ("added", "added LUN"),
        ("removed", "removed LUN"),
        ("read_only", "write protection changed on LUN"),
    ] {
        let l = list(k);
        if !l.is_empty() {
            parts.push(format!("{what} {l}"));
        }
    }
    if v["access_changed"] == Value::Bool(true) {
        parts.push("access changed".into());
    }
    if parts.is_empty() {
        parts.push("nothing changed".into());
    }
    format!(
        "{}; {} session(s) told REPORTED LUNS DATA HAS CHANGED\n",
        parts.join("; "),
        u(&v["nexuses_notified"])
    )
}

/// `srptd ctl reload`.
pub fn reloaded(v: &Value) -> String {
    let mut out = format!("reloaded: {}", applied(&v["applied"]));
    if let Some(r) = v["restart_needed"].as_array().filter(|a| !a.is_empty()) {
        let keys: Vec<String> = r.iter().map(s).collect();
        let _ = writeln!(
            out,
            "changed settings that take effect at the next start: {}",
            keys.join(", ")
        );
    }
    out
}

/// `srptd ctl stats`.
pub fn stats(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "logins {} rejects {} open channels {}",
        u(&v["logins"]),
        u(&v["rejects"]),
        u(&v["open_channels"])
    );
    if let Some(t) = v["total"].as_object() {
        for (k, x) in t {
            let shown = if k.starts_with("bytes") {
                bytes(x.as_u64().unwrap_or(0))
            } else {
                s(x)
            };
            let _ = writeln!(out, "{k:<16} {shown}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sessions_table_has_a_row_per_channel() {
        let v = json!([{
            "initiator": "00000000000000000000000000000001",
            "target_port": "x",
            "channels": [
                {"key": 1, "device": "rxe0", "peer": "169.254.77.1:5555", "in_flight": 3,
                 "credits_granted": 128, "credits_in_use": 3,
                 "stats": {"commands": 10, "bytes_out": 1048576, "bytes_in": 512}},
                {"key": 2, "device": "rxe0", "peer": null, "in_flight": 0,
                 "credits_granted": 128, "credits_in_use": 0, "stats": {"commands": 0}}
            ]
        }]);
        let t = sessions(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("INITIATOR"), "{t}");
        assert!(
            lines[1].contains("3/128") && lines[1].contains("1.0 MiB") && lines[1].contains("512 B"),
            "{t}"
        );
        assert!(lines[2].contains(" - "), "{t}");
        assert_eq!(sessions(&json!([])), "no sessions\n");
    }

    #[test]
    fn luns_and_bytes() {
        let t = luns(
            &json!([{"lun": 0, "backstore": "ram", "bytes": 67108864u64, "block_size": 512,
                              "read_only": true, "serial": "abc"}]),
        );
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .eq(["0", "ram", "64.0", "MiB", "512", "ro", "abc"]),
            "{t}"
        );
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn status_lines() {
        let t = status(
            &json!({"version": "0.1.0", "uptime_s": 5, "id_ext": "a", "ioc_guid": "b", "port": 5555,
                               "devices": [], "luns": 2, "sessions": 1, "channels": 2,
                               "channel_memory": 1024, "channel_memory_budget": 2048,
                               "logins": 2, "rejects": 0, "shutting_down": false}),
        );
        assert!(
            t.contains("devices    all") && t.contains("sessions   1 (2 channels)"),
            "{t}"
        );
    }
}
