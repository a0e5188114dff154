//! I/O statistics, sans I/O: the counters a channel keeps for itself and
//! for each LUN it addresses, and the completion-latency histogram.
//!
//! Everything here is plain integers in fixed arrays, owned by one channel
//! (and so by one poller thread): counting is an add, never an atomic or a
//! lock, and nothing allocates per command. Whoever reads the figures asks
//! the poller for a copy and merges copies with `+=`
//! ([`IoStats`], [`LunStats::merge`]).

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::scsi::{ScsiStatus, SenseKey};

/// Buckets of a [`LatencyHistogram`].
pub const LATENCY_BUCKETS: usize = 24;

/// Completion latencies in log2 buckets of microseconds: bucket `i` counts
/// latencies in [2^i, 2^(i+1)) µs, except that bucket 0 also takes those
/// under 1 µs and the last bucket everything from 2^23 µs (8.4 s) up.
/// Fixed size, no allocation; merging is element-wise addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; LATENCY_BUCKETS],
    sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; LATENCY_BUCKETS],
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    /// The bucket a latency of `ns` nanoseconds falls in.
    pub fn bucket_of(ns: u64) -> usize {
        let us = ns / 1000;
        ((63 - (us | 1).leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
    }

    /// The exclusive upper bound of bucket `i` in microseconds (`None`:
    /// the last bucket, which has none).
    pub fn upper_bound_us(i: usize) -> Option<u64> {
        (i + 1 < LATENCY_BUCKETS).then(|| 1u64 << (i + 1))
    }

    /// Counts one latency of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.buckets[Self::bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of the latencies counted, in nanoseconds.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Each bucket's count (not cumulative).
    pub fn buckets(&self) -> &[u64; LATENCY_BUCKETS] {
        &self.buckets
    }

    /// An upper bound of the `q` quantile (0..=1) in microseconds: the
    /// upper bound of the bucket it falls in (`None`: nothing counted, or
    /// the last bucket).
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Self::upper_bound_us(i);
            }
        }
        None
    }
}

impl std::ops::AddAssign<&LatencyHistogram> for LatencyHistogram {
    fn add_assign(&mut self, o: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }
}

/// `{"count": n, "sum_ns": s, "buckets": [..]}`; `buckets[i]` counts
/// latencies under 2^(i+1) µs and from 2^i µs (see [`LatencyHistogram`]).
impl Serialize for LatencyHistogram {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("LatencyHistogram", 3)?;
        st.serialize_field("count", &self.count())?;
        st.serialize_field("sum_ns", &self.sum_ns)?;
        st.serialize_field("buckets", &self.buckets)?;
        st.end()
    }
}

/// Names of the sense keys by code (SPC-4 table 28), as JSON keys and
/// Prometheus label values.
pub const SENSE_KEY_NAMES: [&str; 16] = [
    "no_sense",
    "recovered_error",
    "not_ready",
    "medium_error",
    "hardware_error",
    "illegal_request",
    "unit_attention",
    "data_protect",
    "blank_check",
    "vendor_specific",
    "copy_aborted",
    "aborted_command",
    "reserved_0c",
    "volume_overflow",
    "miscompare",
    "completed",
];

/// Responses other than GOOD (and CONDITION MET), by status; CHECK
/// CONDITION by sense key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// CHECK CONDITION, indexed by sense key code.
    pub check_condition: [u64; 16],
    pub reservation_conflict: u64,
    pub busy: u64,
    pub task_set_full: u64,
    /// Any other status (ACA ACTIVE, TASK ABORTED, unknown codes).
    pub other: u64,
}

impl StatusCounts {
    /// Counts one response of `status` (with `key` for CHECK CONDITION).
    pub fn record(&mut self, status: ScsiStatus, key: Option<SenseKey>) {
        match status {
            ScsiStatus::GOOD | ScsiStatus::CONDITION_MET => {}
            ScsiStatus::CHECK_CONDITION => {
                let k = key.map_or(0, |k| k.code() & 0xf);
                self.check_condition[usize::from(k)] += 1;
            }
            ScsiStatus::RESERVATION_CONFLICT => self.reservation_conflict += 1,
            ScsiStatus::BUSY => self.busy += 1,
            ScsiStatus::TASK_SET_FULL => self.task_set_full += 1,
            _ => self.other += 1,
        }
    }

    /// All non-GOOD responses.
    pub fn total(&self) -> u64 {
        self.check_condition.iter().sum::<u64>()
            + self.reservation_conflict
            + self.busy
            + self.task_set_full
            + self.other
    }
}

impl std::ops::AddAssign<&StatusCounts> for StatusCounts {
    fn add_assign(&mut self, o: &StatusCounts) {
        for (a, b) in self.check_condition.iter_mut().zip(&o.check_condition) {
            *a += b;
        }
        self.reservation_conflict += o.reservation_conflict;
        self.busy += o.busy;
        self.task_set_full += o.task_set_full;
        self.other += o.other;
    }
}

/// CHECK CONDITION as `{"<sense key>": n}` with the non-zero keys only.
struct CheckConditions<'a>(&'a [u64; 16]);

impl Serialize for CheckConditions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.iter().filter(|&&c| c > 0).count();
        let mut m = s.serialize_map(Some(n))?;
        for (name, c) in SENSE_KEY_NAMES.iter().zip(self.0).filter(|(_, &c)| c > 0) {
            m.serialize_entry(name, c)?;
        }
        m.end()
    }
}

impl Serialize for StatusCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("StatusCounts", 6)?;
        st.serialize_field("total", &self.total())?;
        st.serialize_field("check_condition", &CheckConditions(&self.check_condition))?;
        st.serialize_field("reservation_conflict", &self.reservation_conflict)?;
        st.serialize_field("busy", &self.busy)?;
        st.serialize_field("task_set_full", &self.task_set_full)?;
        st.serialize_field("other", &self.other)?;
        st.end()
    }
}

/// The I/O figures kept per channel and per LUN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    /// SRP_CMDs received.
    pub commands: u64,
    /// Commands that moved data to the initiator (data-in: READ and the
    /// like).
    pub reads: u64,
    /// Commands that moved data from the initiator (data-out: WRITE and
    /// the like).
    pub writes: u64,
    /// Data bytes received from the initiator (RDMA READ, and immediate
    /// data in the SRP_CMD).
    pub bytes_out: u64,
    /// Bytes sent to the initiator (RDMA WRITE).
    pub bytes_in: u64,
    /// Task management requests.
    pub task_mgmt: u64,
    /// Commands aborted by task management or disconnect.
    pub aborted: u64,
    /// Responses other than GOOD, by status and sense key.
    pub errors: StatusCounts,
    /// Requests (commands and task management) in progress.
    pub queue_depth: u64,
    /// The most requests in progress at once (merged: the largest of the
    /// parts, e.g. of one channel).
    pub max_queue_depth: u64,
    /// From the SRP_CMD's receive completion to the send completion of its
    /// SRP_RSP, commands answered only.
    pub latency: LatencyHistogram,
}

impl IoStats {
    /// One more request in progress.
    pub fn enter(&mut self) {
        self.queue_depth += 1;
        self.max_queue_depth = self.max_queue_depth.max(self.queue_depth);
    }

    /// One request fewer in progress.
    pub fn leave(&mut self) {
        self.queue_depth = self.queue_depth.saturating_sub(1);
    }
}

impl std::ops::AddAssign<&IoStats> for IoStats {
    fn add_assign(&mut self, o: &IoStats) {
        self.commands += o.commands;
        self.reads += o.reads;
        self.writes += o.writes;
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        self.task_mgmt += o.task_mgmt;
        self.aborted += o.aborted;
        self.errors += &o.errors;
        self.queue_depth += o.queue_depth;
        self.max_queue_depth = self.max_queue_depth.max(o.max_queue_depth);
        self.latency += &o.latency;
    }
}

/// [`IoStats`] by LUN number. A channel keeps at most
/// [`LunStats::MAX_PER_CHANNEL`] (it addresses few LUNs; a slot is taken
/// the first time it sends a command to a mapped LUN, the only allocation,
/// never per command, and a slot never moves, so commands keep its index);
/// merged tables have no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LunStats {
    entries: Vec<(u16, IoStats)>,
}

impl LunStats {
    /// LUNs one channel keeps figures for; commands to more LUNs count in
    /// the channel's totals only.
    pub const MAX_PER_CHANNEL: usize = 64;

    /// The slot of `lun`, taken if new and the channel's limit allows.
    pub fn slot(&mut self, lun: u16) -> Option<u16> {
        if let Some(i) = self.find(lun) {
            return Some(i);
        }
        if self.entries.len() >= Self::MAX_PER_CHANNEL {
            return None;
        }
        self.entries.push((lun, IoStats::default()));
        Some((self.entries.len() - 1) as u16)
    }

    /// The slot of `lun` if it has one (nothing is taken).
    pub fn find(&self, lun: u16) -> Option<u16> {
        self.entries.iter().position(|e| e.0 == lun).map(|i| i as u16)
    }

    /// The figures of a slot.
    pub fn get_mut(&mut self, slot: u16) -> Option<&mut IoStats> {
        self.entries.get_mut(usize::from(slot)).map(|e| &mut e.1)
    }

    /// The figures of `lun`.
    pub fn get(&self, lun: u16) -> Option<&IoStats> {
        self.find(lun).map(|i| &self.entries[usize::from(i)].1)
    }

    /// (LUN, figures) in LUN order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &IoStats)> {
        let mut v: Vec<(u16, &IoStats)> = self.entries.iter().map(|(l, s)| (*l, s)).collect();
        v.sort_by_key(|e| e.0);
        v.into_iter()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `o`'s figures LUN by LUN (no limit on the LUNs kept).
    pub fn merge(&mut self, o: &LunStats) {
        for (lun, s) in &o.entries {
            match self.find(*lun) {
                Some(i) => self.entries[usize::from(i)].1 += s,
                None => self.entries.push((*lun, s.clone())),
            }
        }
    }
}

/// `[{"lun": n, ...figures}]`.
impl Serialize for LunStats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Row<'a> {
            lun: u16,
            #[serde(flatten)]
            stats: &'a IoStats,
        }
        s.collect_seq(self.iter().map(|(lun, stats)| Row { lun, stats }))
    }
}

/// Converts tick differences to nanoseconds with a multiply and a shift
/// (no division on the data path): `ns = ticks * mult >> 32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickScale {
    mult: u64,
}

impl Default for TickScale {
    /// Ticks are nanoseconds.
    fn default() -> Self {
        TickScale { mult: 1 << 32 }
    }
}

impl TickScale {
    /// Ticks counting `ticks_per_ms` per millisecond.
    pub fn per_ms(ticks_per_ms: u64) -> TickScale {
        let mult = (1_000_000u128 << 32) / u128::from(ticks_per_ms.max(1));
        TickScale {
            mult: mult.min(u128::from(u64::MAX)) as u64,
        }
    }

    /// `ticks` in nanoseconds.
    pub fn ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.mult)) >> 32).min(u128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_microseconds() {
        let b = LatencyHistogram::bucket_of;
        assert_eq!(b(0), 0);
        assert_eq!(b(999), 0, "under 1 µs");
        assert_eq!(b(1_999), 0, "1 µs");
        assert_eq!(b(2_000), 1);
        assert_eq!(b(3_999), 1);
        assert_eq!(b(4_000), 2);
        assert_eq!(b(1_000_000), 9, "1 ms is in [512, 1024) µs");
        assert_eq!(b(1_024_000), 10);
        assert_eq!(b(u64::MAX), LATENCY_BUCKETS - 1);
        assert_eq!(LatencyHistogram::upper_bound_us(0), Some(2));
        assert_eq!(LatencyHistogram::upper_bound_us(9), Some(1024));
        assert_eq!(LatencyHistogram::upper_bound_us(LATENCY_BUCKETS - 1), None);
        // Every latency lies below its bucket's bound and at or above the
        // previous bucket's.
        for ns in [0u64, 1, 1_500, 2_000, 77_777, 5_000_000, 9_000_000_000] {
            let i = b(ns);
            if let Some(hi) = LatencyHistogram::upper_bound_us(i) {
                assert!(ns < hi * 1000, "{ns}");
            }
            if i > 0 {
                assert!(ns >= (1u64 << i) * 1000, "{ns}");
            }
        }
    }

    #[test]
    fn histogram_counts_sums_and_merges() {
        let mut a = LatencyHistogram::default();
        for ns in [500, 3_000, 3_500, 100_000] {
            a.record(ns);
        }
        assert_eq!(a.count(), 4);
        assert_eq!(a.sum_ns(), 107_000);
        assert_eq!(a.buckets()[0], 1);
        assert_eq!(a.buckets()[1], 2);
        assert_eq!(a.buckets()[6], 1, "100 µs is in [64, 128)");
        assert_eq!(a.quantile_bound_us(0.5), Some(4));
        assert_eq!(a.quantile_bound_us(1.0), Some(128));
        let mut b = LatencyHistogram::default();
        b.record(3_000);
        b += &a;
        assert_eq!(b.count(), 5);
        assert_eq!(b.buckets()[1], 3);
        assert_eq!(b.sum_ns(), 110_000);
        assert_eq!(LatencyHistogram::default().quantile_bound_us(0.5), None);
        let v = serde_json::to_value(b).unwrap();
        assert_eq!(v["count"], 5);
        assert_eq!(v["buckets"].as_array().unwrap().len(), LATENCY_BUCKETS);
    }

    #[test]
    fn statuses_count_by_sense_key() {
        let mut s = StatusCounts::default();
        s.record(ScsiStatus::GOOD, None);
        s.record(ScsiStatus::CHECK_CONDITION, Some(SenseKey::IllegalRequest));
        s.record(ScsiStatus::CHECK_CONDITION, Some(SenseKey::IllegalRequest));
        s.record(ScsiStatus::CHECK_CONDITION, Some(SenseKey::UnitAttention));
        s.record(ScsiStatus::RESERVATION_CONFLICT, None);
        s.record(ScsiStatus::BUSY, None);
        s.record(ScsiStatus::TASK_SET_FULL, None);
        s.record(ScsiStatus(0x30), None);
        assert_eq!(s.total(), 7);
        assert_eq!(s.check_condition[5], 2);
        let v = serde_json::to_value(s).unwrap();
        assert_eq!(
            v["check_condition"],
            serde_json::json!({"illegal_request": 2, "unit_attention": 1})
        );
        assert_eq!(v["other"], 1);
    }

    #[test]
    fn lun_tables_merge_and_list_in_lun_order() {
        let mut a = LunStats::default();
        assert_eq!(a.slot(3), Some(0));
        assert_eq!(a.slot(1), Some(1), "a new LUN never moves a slot");
        assert_eq!(a.slot(3), Some(0));
        a.get_mut(a.find(1).unwrap()).unwrap().commands = 5;
        {
            let e = a.get_mut(a.find(3).unwrap()).unwrap();
            e.commands = 2;
            e.enter();
            e.enter();
            e.leave();
            e.latency.record(10_000);
        }
        let mut b = LunStats::default();
        let s = b.slot(3).unwrap();
        let e = b.get_mut(s).unwrap();
        e.commands = 1;
        e.enter();
        e.latency.record(10_000);
        let mut t = LunStats::default();
        t.merge(&a);
        t.merge(&b);
        assert_eq!(t.get(1).unwrap().commands, 5);
        let l3 = t.get(3).unwrap();
        assert_eq!(l3.commands, 3);
        assert_eq!(l3.queue_depth, 2);
        assert_eq!(l3.max_queue_depth, 2, "the largest part's maximum");
        assert_eq!(l3.latency.count(), 2);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v[0]["lun"], 1);
        assert_eq!(v[1]["lun"], 3);
        assert_eq!(v[1]["latency"]["count"], 2);
    }

    #[test]
    fn a_channel_keeps_a_bounded_number_of_luns() {
        let mut a = LunStats::default();
        for l in 0..LunStats::MAX_PER_CHANNEL as u16 {
            assert!(a.slot(l).is_some());
        }
        assert_eq!(a.slot(1000), None);
        assert!(a.slot(5).is_some(), "known LUNs keep their slot");
    }

    #[test]
    fn ticks_scale_to_nanoseconds() {
        assert_eq!(TickScale::default().ns(1234), 1234);
        let s = TickScale::per_ms(3_000_000); // 3 GHz
        assert_eq!(s.ns(3_000), 999, "1 µs, rounded down");
        assert!((999_999_000..=1_000_000_000).contains(&s.ns(3_000_000_000)));
        assert_eq!(TickScale::per_ms(0).ns(1), 1_000_000);
        assert_eq!(TickScale::per_ms(1).ns(u64::MAX), u64::MAX);
    }
}
