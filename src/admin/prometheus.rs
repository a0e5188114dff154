//! The `stats` result as Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>),
//! served by the metrics listener (`--metrics`). Sans I/O: JSON in, text
//! out. Three scopes, each its own metric families: `srptd_target_*` (all
//! channels, closed ones included), `srptd_lun_*` (label `lun`) and
//! `srptd_channel_*` (labels `channel`, `initiator`, `target_port`; open
//! channels only).

use std::fmt::Write;

use serde_json::Value;

use crate::proto::stats::{LatencyHistogram, LATENCY_BUCKETS, SENSE_KEY_NAMES};

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters every scope has: (JSON key, metric name part, help).
const IO_COUNTERS: &[(&str, &str, &str)] = &[
    ("commands", "commands", "SRP_CMDs received."),
    (
        "reads",
        "reads",
        "Commands that moved data to the initiator (data-in).",
    ),
    (
        "writes",
        "writes",
        "Commands that moved data from the initiator (data-out).",
    ),
    (
        "bytes_in",
        "read_bytes",
        "Bytes sent to the initiator (data-in, RDMA WRITE).",
    ),
    (
        "bytes_out",
        "written_bytes",
        "Data bytes received from the initiator (data-out: RDMA READ or immediate data).",
    ),
    ("task_mgmt", "task_mgmt", "Task management requests."),
    (
        "aborted",
        "aborted",
        "Commands aborted by task management, another nexus or a disconnect.",
    ),
];

/// Counters of the SRP channel (target and channel scopes).
const SRP_COUNTERS: &[(&str, &str, &str)] = &[
    ("immediate", "immediate", "Commands that carried immediate data."),
    (
        "indirect",
        "indirect",
        "Commands with an indirect descriptor table.",
    ),
    (
        "external_tables",
        "external_tables",
        "Indirect tables fetched by RDMA READ.",
    ),
    (
        "zero_copy",
        "zero_copy",
        "Commands that moved data straight to or from a RAM LUN.",
    ),
    (
        "task_set_full",
        "credit_overruns",
        "Requests beyond the request limit (answered TASK SET FULL).",
    ),
    ("cred_reqs", "cred_reqs", "SRP_CRED_REQs sent."),
    (
        "protocol_errors",
        "protocol_errors",
        "IUs rejected as malformed or of an unexpected type.",
    ),
];

/// Non-GOOD statuses other than CHECK CONDITION: (JSON key, label value).
const STATUSES: &[&str] = &["reservation_conflict", "busy", "task_set_full", "other"];

/// Rows of one scope: (labels, figures).
type Rows<'a> = Vec<(String, &'a Value)>;

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, extra: &str, value: impl std::fmt::Display) {
        let sep = if labels.is_empty() || extra.is_empty() {
            ""
        } else {
            ","
        };
        if labels.is_empty() && extra.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}{sep}{extra}}} {value}");
        }
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A label value, escaped (backslash, quote, newline).
fn esc(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The upper bound of bucket `i` in seconds, as the `le` label.
fn le(i: usize) -> String {
    match LatencyHistogram::upper_bound_us(i) {
        Some(us) => format!("{}", us as f64 / 1e6),
        None => "+Inf".into(),
    }
}

fn scope(out: &mut Out, scope: &str, rows: &Rows, srp: bool) {
    for (key, part, help) in IO_COUNTERS {
        let name = format!("srptd_{scope}_{part}_total");
        out.family(&name, "counter", help);
        for (l, v) in rows {
            out.sample(&name, l, "", u(&v[key]));
        }
    }
    if srp {
        for (key, part, help) in SRP_COUNTERS {
            let name = format!("srptd_{scope}_{part}_total");
            out.family(&name, "counter", help);
            for (l, v) in rows {
                out.sample(&name, l, "", u(&v[key]));
            }
        }
    }
    let name = format!("srptd_{scope}_errors_total");
    out.family(
        &name,
        "counter",
        "Responses other than GOOD, by status (CHECK CONDITION by sense key).",
    );
    for (l, v) in rows {
        let e = &v["errors"];
        for k in SENSE_KEY_NAMES {
            let n = u(&e["check_condition"][k]);
            if n > 0 {
                out.sample(
                    &name,
                    l,
                    &format!("status=\"check_condition\",sense_key=\"{k}\""),
                    n,
                );
            }
        }
        for st in STATUSES {
            out.sample(&name, l, &format!("status=\"{st}\""), u(&e[st]));
        }
    }
    for (key, help) in [
        ("queue_depth", "Requests in progress."),
        (
            "max_queue_depth",
            "The most requests in progress at once (on one channel).",
        ),
    ] {
        let name = format!("srptd_{scope}_{key}");
        out.family(&name, "gauge", help);
        for (l, v) in rows {
            out.sample(&name, l, "", u(&v[key]));
        }
    }
    let name = format!("srptd_{scope}_latency_seconds");
    out.family(
        &name,
        "histogram",
        "From an SRP_CMD's receive completion to its SRP_RSP's send completion.",
    );
    for (l, v) in rows {
        let h = &v["latency"];
        let mut cum = 0u64;
        for i in 0..LATENCY_BUCKETS {
            cum += u(&h["buckets"][i]);
            out.sample(&format!("{name}_bucket"), l, &format!("le=\"{}\"", le(i)), cum);
        }
        out.sample(&format!("{name}_sum"), l, "", u(&h["sum_ns"]) as f64 / 1e9);
        out.sample(&format!("{name}_count"), l, "", cum);
    }
}

/// The exposition of a `stats` result.
pub fn render(v: &Value) -> String {
    let mut out = Out(String::new());
    out.family("srptd_logins_total", "counter", "Logins accepted.");
    out.sample("srptd_logins_total", "", "", u(&v["logins"]));
    out.family("srptd_login_rejects_total", "counter", "Logins rejected.");
    out.sample("srptd_login_rejects_total", "", "", u(&v["rejects"]));
    out.family("srptd_channels", "gauge", "Open channels.");
    out.sample("srptd_channels", "", "", u(&v["open_channels"]));
    scope(&mut out, "target", &vec![(String::new(), &v["total"])], true);
    let luns: Rows = v["luns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (format!("lun=\"{}\"", esc(&l["lun"])), l))
        .collect();
    scope(&mut out, "lun", &luns, false);
    let channels: Rows = v["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                format!(
                    "channel=\"{}\",initiator=\"{}\",target_port=\"{}\"",
                    esc(&c["key"]),
                    esc(&c["initiator"]),
                    esc(&c["target_port"])
                ),
                &c["stats"],
            )
        })
        .collect();
    scope(&mut out, "channel", &channels, true);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ChannelStats, LunStats};
    use crate::scsi::{ScsiStatus, SenseKey};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    /// A metric name and its labels.
    type Series = (String, BTreeMap<String, String>);

    /// A sample line: name, labels, value.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let (head, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut m = BTreeMap::new();
                for pair in body.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted");
                    assert!(m.insert(k.to_string(), v.to_string()).is_none(), "{line}");
                }
                (n.to_string(), m)
            }
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        assert!(name.chars().all(ok) && !name.starts_with(|c: char| c.is_ascii_digit()));
        (name, labels, value)
    }

    /// Parses the whole text back: every sample belongs to a family
    /// declared before it, families are not split, histogram buckets are
    /// cumulative and end at `+Inf` = `_count`. Returns the samples.
    fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut current = String::new();
        let mut seen_families = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    seen_families.insert(name.to_string()),
                    "family {name} declared twice"
                );
                types.insert(name.into(), kind.into());
                current = name.into();
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
            let s = parse_sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| {
                    s.0.strip_suffix(suf)
                        .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(&s.0)
                .to_string();
            assert_eq!(family, current, "{line} outside its family");
            if types[&family] == "counter" {
                assert!(s.0.ends_with("_total"), "{line}");
            }
            samples.push(s);
        }
        // Histograms: cumulative buckets per label set.
        let mut buckets: BTreeMap<Series, Vec<(String, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for (n, l, v) in &samples {
            if let Some(f) = n.strip_suffix("_bucket") {
                let mut l = l.clone();
                let le = l.remove("le").expect("le label");
                buckets.entry((f.to_string(), l)).or_default().push((le, *v));
            } else if let Some(f) = n.strip_suffix("_count") {
                counts.insert((f.to_string(), l.clone()), *v);
            }
        }
        for (k, bs) in &buckets {
            assert_eq!(bs.len(), LATENCY_BUCKETS);
            assert!(bs.windows(2).all(|w| w[0].1 <= w[1].1), "{k:?} not cumulative");
            let bounds: Vec<f64> = bs
                .iter()
                .map(|b| b.0.parse::<f64>().unwrap_or(f64::INFINITY))
                .collect();
            assert!(
                bounds.windows(2).all(|w| w[0] < w[1]),
                "{k:?} bounds not increasing"
            );
            assert_eq!(bs.last().unwrap().0, "+Inf");
            assert_eq!(Some(&bs.last().unwrap().1), counts.get(k), "{k:?}");
        }
        samples
    }

    fn value(
        samples: &[(String, BTreeMap<String, String>, f64)],
        name: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
            .2
    }

    fn figures() -> Value {
        let mut ch = ChannelStats::default();
        ch.io.commands = 7;
        ch.io.reads = 4;
        ch.io.bytes_in = 4096;
        ch.io
            .errors
            .record(ScsiStatus::CHECK_CONDITION, Some(SenseKey::UnitAttention));
        ch.io.errors.record(ScsiStatus::BUSY, None);
        for ns in [1_500, 3_000, 3_000, 50_000, 20_000_000_000] {
            ch.io.latency.record(ns);
        }
        let mut luns = LunStats::default();
        let s = luns.slot(3).unwrap();
        *luns.get_mut(s).unwrap() = ch.io.clone();
        json!({
            "logins": 2, "rejects": 1, "open_channels": 1,
            "total": ch, "luns": luns,
            "channels": [{"key": 5, "initiator": "00ab", "target_port": "00cd", "stats": ch, "luns": luns}],
        })
    }

    #[test]
    fn exposition_parses_back_with_cumulative_buckets() {
        let text = render(&figures());
        let s = parse(&text);
        assert_eq!(value(&s, "srptd_logins_total", &[]), 2.0);
        assert_eq!(value(&s, "srptd_target_commands_total", &[]), 7.0);
        assert_eq!(value(&s, "srptd_lun_read_bytes_total", &[("lun", "3")]), 4096.0);
        assert_eq!(
            value(
                &s,
                "srptd_channel_commands_total",
                &[("channel", "5"), ("initiator", "00ab")]
            ),
            7.0
        );
        assert_eq!(
            value(
                &s,
                "srptd_lun_errors_total",
                &[
                    ("lun", "3"),
                    ("status", "check_condition"),
                    ("sense_key", "unit_attention")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(&s, "srptd_lun_errors_total", &[("lun", "3"), ("status", "busy")]),
            1.0
        );
        let b = |le| {
            value(
                &s,
                "srptd_lun_latency_seconds_bucket",
                &[("lun", "3"), ("le", le)],
            )
        };
        assert_eq!(b("0.000002"), 1.0, "1.5 µs");
        assert_eq!(b("0.000004"), 3.0, "cumulative");
        assert_eq!(b("0.000064"), 4.0);
        assert_eq!(b("+Inf"), 5.0, "20 s is beyond the last bound");
        assert_eq!(value(&s, "srptd_lun_latency_seconds_count", &[("lun", "3")]), 5.0);
        let sum = value(&s, "srptd_lun_latency_seconds_sum", &[("lun", "3")]);
        assert!((sum - 20.0000575).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn empty_figures_still_form_valid_text() {
        let text = render(&json!({}));
        let s = parse(&text);
        assert_eq!(value(&s, "srptd_channels", &[]), 0.0);
        assert_eq!(value(&s, "srptd_target_latency_seconds_count", &[]), 0.0);
        assert!(!s.iter().any(|(n, _, _)| n.starts_with("srptd_lun_")));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc(&json!("a\"b\\c\nd")), "a\\\"b\\\\c\\nd");
        assert_eq!(esc(&json!(12)), "12");
    }
}
