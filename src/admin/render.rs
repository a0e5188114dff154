//! The tables `srptd ctl` prints from the results of the admin calls
//! (`--json` prints the results themselves).

use serde_json::Value;
use std::fmt::Write;

use crate::proto::stats::LatencyHistogram;

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
    let heap = match v["heap_in_use"].as_u64() {
        Some(h) => format!(", heap {}", bytes(h)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "mapped     {} of buffers (RAM LUNs, rings, pools){heap}",
        bytes(u(&v["buffer_memory"]))
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
                // Two nexuses of one initiator differ by target port (its
                // relative target port identifier, as `ctl alua` lists it).
                s(&sess["relative_port"]),
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
            "TARGET PORT",
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

/// `srptd ctl alua`: one row per target port group.
pub fn alua(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let ports: Vec<String> = g["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}={}", s(&p["relative_port"]), s(&p["name"])))
                .collect();
            vec![s(&g["id"]), s(&g["state"]), ports.join(" ")]
        })
        .collect();
    table(&["GROUP", "STATE", "PORTS (RELATIVE=DEVICE/PORT)"], &rows)
}

/// `srptd ctl alua set`.
pub fn alua_set(v: &Value) -> String {
    if v["changed"] == Value::Bool(true) {
        format!(
            "group {} is {}; {} session(s) notified\n",
            s(&v["group"]),
            s(&v["state"]),
            s(&v["nexuses_notified"])
        )
    } else {
        format!("group {} was {} already\n", s(&v["group"]), s(&v["state"]))
    }
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
        (
            "flush_pending",
            "still running commands, flushed after the last: LUN",
        ),
        ("flush_failed", "flush failed (see the log): LUN"),
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

/// Latency bounds of a histogram as JSON (`{"buckets": [..]}`): the upper
/// bound of the bucket holding quantile `q`, `≤2ms`-style (`-`: none).
fn latency_bound(h: &Value, q: f64) -> String {
    let counts: Vec<u64> = h["buckets"].as_array().into_iter().flatten().map(u).collect();
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return "-".into();
    }
    let rank = ((n as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return match LatencyHistogram::upper_bound_us(i).filter(|_| i + 1 < counts.len()) {
                Some(us) if us >= 1_000_000 => format!("<{}s", us / 1_000_000),
                Some(us) if us >= 1000 => format!("<{}ms", us / 1000),
                Some(us) => format!("<{us}us"),
                None => format!(">={}s", (1u64 << i) / 1_000_000),
            };
        }
    }
    "-".into()
}

/// Mean latency in microseconds (`-`: none).
fn latency_mean(h: &Value) -> String {
    match u(&h["count"]) {
        0 => "-".into(),
        n => format!("{:.0}us", u(&h["sum_ns"]) as f64 / n as f64 / 1000.0),
    }
}

/// Non-GOOD responses: `illegal_request=2 busy=1` (`-`: none).
fn errors(e: &Value) -> String {
    let mut parts: Vec<String> = e["check_condition"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k}={}", u(n)))
        .collect();
    for k in ["reservation_conflict", "busy", "task_set_full", "other"] {
        if u(&e[k]) > 0 {
            parts.push(format!("{k}={}", u(&e[k])));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

const IO_HEADER: [&str; 11] = [
    "COMMANDS", "READS", "WRITES", "READ", "WRITTEN", "QD", "MAX QD", "MEAN", "P50", "P99", "ERRORS",
];

/// The I/O columns of one row of figures.
fn io_cells(v: &Value) -> Vec<String> {
    vec![
        u(&v["commands"]).to_string(),
        u(&v["reads"]).to_string(),
        u(&v["writes"]).to_string(),
        bytes(u(&v["bytes_in"])),
        bytes(u(&v["bytes_out"])),
        u(&v["queue_depth"]).to_string(),
        u(&v["max_queue_depth"]).to_string(),
        latency_mean(&v["latency"]),
        latency_bound(&v["latency"], 0.5),
        latency_bound(&v["latency"], 0.99),
        errors(&v["errors"]),
    ]
}

/// `srptd ctl stats`: target totals, then a table per LUN and per open
/// channel.
pub fn stats(v: &Value) -> String {
    let mut out = String::new();
    let t = &v["total"];
    let _ = writeln!(
        out,
        "logins {} rejects {} open channels {}",
        u(&v["logins"]),
        u(&v["rejects"]),
        u(&v["open_channels"])
    );
    let _ = writeln!(
        out,
        "task-mgmt {} aborted {} immediate {} indirect {} external-tables {} zero-copy {} protocol-errors {}\n",
        u(&t["task_mgmt"]),
        u(&t["aborted"]),
        u(&t["immediate"]),
        u(&t["indirect"]),
        u(&t["external_tables"]),
        u(&t["zero_copy"]),
        u(&t["protocol_errors"]),
    );
    let mut header = vec!["SCOPE"];
    header.extend(IO_HEADER);
    let mut rows = vec![];
    let mut row = vec!["target".to_string()];
    row.extend(io_cells(t));
    rows.push(row);
    for l in v["luns"].as_array().into_iter().flatten() {
        let mut row = vec![format!("lun {}", s(&l["lun"]))];
        row.extend(io_cells(l));
        rows.push(row);
    }
    out.push_str(&table(&header, &rows));
    let channels: Vec<&Value> = v["channels"].as_array().into_iter().flatten().collect();
    if !channels.is_empty() {
        out.push('\n');
        let mut header = vec!["CHANNEL", "INITIATOR"];
        header.extend(IO_HEADER);
        let rows: Vec<Vec<String>> = channels
            .iter()
            .map(|c| {
                let mut row = vec![s(&c["key"]), s(&c["initiator"])];
                row.extend(io_cells(&c["stats"]));
                row
            })
            .collect();
        out.push_str(&table(&header, &rows));
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
        // One initiator through two target ports: two nexuses, told apart.
        let ch = json!({"key": 1, "device": "rxe0", "stats": {}});
        let mut ch2 = ch.clone();
        ch2["key"] = json!(2);
        ch2["device"] = json!("rxe1");
        let v = json!([
            {"initiator": "00000000000000000000000000000001", "relative_port": 1, "channels": [ch]},
            {"initiator": "00000000000000000000000000000001", "relative_port": 2, "channels": [ch2]}
        ]);
        let t = sessions(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("TARGET PORT"), "{t}");
        let port = |l: &str| l.split_whitespace().nth(1).map(str::to_owned);
        assert_eq!(port(lines[1]).as_deref(), Some("1"), "{t}");
        assert_eq!(port(lines[2]).as_deref(), Some("2"), "{t}");
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
                               "buffer_memory": 3072, "heap_in_use": 1536,
                               "logins": 2, "rejects": 0, "shutting_down": false}),
        );
        assert!(
            t.contains("devices    all") && t.contains("sessions   1 (2 channels)"),
            "{t}"
        );
        assert!(
            t.contains("mapped     3.0 KiB of buffers (RAM LUNs, rings, pools), heap 1.5 KiB"),
            "{t}"
        );
    }

    #[test]
    fn stats_tables_show_luns_channels_and_latency() {
        let mut buckets = vec![0u64; 24];
        buckets[3] = 99; // [8, 16) µs
        buckets[10] = 1; // [1024, 2048) µs
        let io = json!({"commands": 100, "reads": 60, "writes": 40, "bytes_in": 1048576,
                        "bytes_out": 2048, "queue_depth": 2, "max_queue_depth": 16,
                        "latency": {"count": 100, "sum_ns": 2_000_000, "buckets": buckets},
                        "errors": {"check_condition": {"unit_attention": 1}, "busy": 0}});
        let v = json!({"logins": 1, "rejects": 0, "open_channels": 1, "total": io,
                       "luns": [{"lun": 0, "commands": 100}],
                       "channels": [{"key": 4, "initiator": "ab", "stats": io}]});
        let t = stats(&v);
        let target = t.lines().find(|l| l.starts_with("target")).expect(&t);
        assert!(
            target.split_whitespace().eq([
                "target",
                "100",
                "60",
                "40",
                "1.0",
                "MiB",
                "2.0",
                "KiB",
                "2",
                "16",
                "20us",
                "<16us",
                "<16us",
                "unit_attention=1"
            ]),
            "{t}"
        );
        assert!(
            t.lines().any(|l| l.starts_with("lun 0") && l.contains(" - ")),
            "{t}"
        );
        assert!(t.lines().any(|l| l.starts_with("4 ") && l.contains("ab")), "{t}");
        buckets[10] = 10;
        assert_eq!(latency_bound(&json!({"buckets": buckets}), 0.99), "<2ms");
    }
}
