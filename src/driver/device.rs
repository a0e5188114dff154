//! Per-device state shared by all channels on one RDMA device: the verbs
//! context, a protection domain, the RAM LUNs registered once and, in
//! shared receive queue mode, the SRQ with its receive ring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::mem::DmaBuf;
use crate::proto::credits::RESERVED_RECVS;
use crate::proto::{SharedRecv, WrId};
use crate::rdma::{
    self, AccessFlags, CmIdHandle, Context, DeviceAttr, MemoryRegion, ProtectionDomain, RecvRequest,
    RecvScratch, Sge, SharedReceiveQueue,
};

/// Default number of SRQ receive slots.
pub const DEFAULT_SRQ_SLOTS: u32 = 4096;
/// Memory the default SRQ ring may take (slots shrink for large IUs).
pub const DEFAULT_SRQ_RING_BYTES: u64 = 64 << 20;
/// Slot numbers travel in 16 bits of the work request id.
pub const MAX_SRQ_SLOTS: u32 = WrId::INDEXES;

/// What a device's shared receive queue should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqSettings {
    /// Slots asked for (`None`: derived, see [`srq_slots`]).
    pub slots: Option<u32>,
    /// The largest request IU a login may be granted (every slot fits it).
    pub max_it_iu_len: u32,
    /// Credits per channel (the derived size holds at least one channel).
    pub queue_depth: u32,
}

/// Slot size of an SRQ ring for request IUs of up to `max_it_iu_len` bytes.
pub fn srq_slot_size(max_it_iu_len: u32) -> u32 {
    max_it_iu_len.next_multiple_of(64)
}

/// Number of SRQ slots: what was asked for, or [`DEFAULT_SRQ_SLOTS`]
/// shrunk to fit [`DEFAULT_SRQ_RING_BYTES`] (but never below one channel's
/// credits plus the reserve); always capped by the device (`max_srq_wr`)
/// and by [`MAX_SRQ_SLOTS`].
pub fn srq_slots(s: &SrqSettings, max_srq_wr: u32) -> u32 {
    let want = s.slots.unwrap_or_else(|| {
        let fit = (DEFAULT_SRQ_RING_BYTES / u64::from(srq_slot_size(s.max_it_iu_len).max(64))) as u32;
        DEFAULT_SRQ_SLOTS.min(fit.max(s.queue_depth + RESERVED_RECVS))
    });
    want.min(max_srq_wr).clamp(1, MAX_SRQ_SLOTS)
}

/// Receive requests chained into one `ibv_post_recv` / `ibv_post_srq_recv`.
pub const RECV_BATCH: usize = 32;

/// Builds the receive requests of `slots` (at most [`RECV_BATCH`]) of a ring
/// of `slot_size`-byte slots in `mr` on the stack and hands them to `post`
/// (one chain, one doorbell). `None`, with nothing posted, if there are too
/// many slots or one lies outside `mr`.
pub fn with_recv_chain<T>(
    mr: &MemoryRegion,
    slot_size: u32,
    slots: &[u32],
    post: impl FnOnce(&[RecvRequest<'_>]) -> T,
) -> Option<T> {
    if slots.len() > RECV_BATCH {
        return None;
    }
    let mut sges = [Sge::default(); RECV_BATCH];
    for (sge, &slot) in sges.iter_mut().zip(slots) {
        *sge = mr.sge(slot as usize * slot_size as usize, slot_size)?;
    }
    let mut reqs = [RecvRequest { wr_id: 0, local: &[] }; RECV_BATCH];
    for ((req, &slot), sge) in reqs.iter_mut().zip(slots).zip(&sges) {
        *req = RecvRequest {
            wr_id: WrId::recv(slot),
            local: std::slice::from_ref(sge),
        };
    }
    Some(post(&reqs[..slots.len()]))
}

/// A device's shared receive queue and the ring of receive buffers posted
/// to it. Every slot is either posted (its bit set) or owned by exactly one
/// channel, which gives it back with `Action::PostRecv`; posting and
/// completing flip one bit each, so a slot can never be posted twice and
/// slots lost at shutdown are counted.
#[derive(Debug)]
pub struct SrqRing {
    srq: Arc<SharedReceiveQueue>,
    mr: MemoryRegion,
    recv: SharedRecv,
    posted: Box<[AtomicU64]>,
}

impl SrqRing {
    /// Creates the SRQ and its ring in `pd` and posts every slot.
    pub fn new(pd: &Arc<ProtectionDomain>, slots: u32, slot_size: u32) -> rdma::Result<SrqRing> {
        if slots == 0 || slots > MAX_SRQ_SLOTS || slot_size == 0 {
            return Err(rdma::Error::Invalid("SRQ ring geometry"));
        }
        let srq = SharedReceiveQueue::new(pd, slots, 1, 0)?;
        let buf =
            Arc::new(
                DmaBuf::new(slots as usize * slot_size as usize).map_err(|e| rdma::Error::Os {
                    op: "mmap(SRQ ring)",
                    source: e,
                })?,
            );
        let mr = MemoryRegion::register(pd, buf.clone(), AccessFlags::LOCAL_WRITE)?;
        let ring = SrqRing {
            srq,
            mr,
            recv: SharedRecv {
                buf,
                slot_size,
                slots,
            },
            posted: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        };
        let all: Vec<u32> = (0..slots).collect();
        let mut scratch = RecvScratch::with_capacity(32, 32);
        let lost = ring.post(&all, &mut scratch);
        if lost > 0 {
            return Err(rdma::Error::Invalid("posting the SRQ ring failed"));
        }
        Ok(ring)
    }

    /// The ring as channels see it.
    pub fn shared_recv(&self) -> SharedRecv {
        self.recv.clone()
    }

    /// The shared receive queue (for queue pair creation).
    pub fn srq(&self) -> &Arc<SharedReceiveQueue> {
        &self.srq
    }

    /// The ring's memory region.
    pub fn mr(&self) -> &MemoryRegion {
        &self.mr
    }

    /// Slots in the ring.
    pub fn slots(&self) -> u32 {
        self.recv.slots
    }

    /// Slots posted right now.
    pub fn posted(&self) -> u32 {
        self.posted
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum()
    }

    fn bit(slot: u32) -> (usize, u64) {
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    /// A receive of `slot` completed (successfully or not): the slot is now
    /// owned by the channel it completed on. False (and nothing changes) if
    /// the slot was not posted: such a completion must not be served.
    pub fn completed(&self, slot: u32) -> bool {
        if slot >= self.recv.slots {
            return false;
        }
        let (w, b) = Self::bit(slot);
        self.posted[w].fetch_and(!b, Ordering::Relaxed) & b != 0
    }

    /// Posts `slots` (one doorbell per [`RECV_BATCH`]); returns how many could
    /// not be posted (logged; they count as lost). A slot that is already
    /// posted is skipped with an error: posting it twice would let two
    /// receives land in one buffer.
    pub fn post(&self, slots: &[u32], scratch: &mut RecvScratch) -> usize {
        let mut lost = 0;
        let mut batch = [0u32; RECV_BATCH];
        let mut n = 0;
        let flush = |batch: &[u32], scratch: &mut RecvScratch| -> usize {
            let posted = match with_recv_chain(&self.mr, self.recv.slot_size, batch, |reqs| {
                self.srq.post_recv(reqs, scratch)
            }) {
                Some(Ok(())) => return 0,
                Some(Err(e)) => {
                    tracing::error!(error = %e.error, posted = e.posted, "ibv_post_srq_recv failed");
                    e.posted.min(batch.len())
                }
                // Cannot happen: slots are checked and the ring covers them.
                None => {
                    tracing::error!("SRQ slot outside the ring's memory region");
                    0
                }
            };
            for &slot in &batch[posted..] {
                let (w, b) = Self::bit(slot);
                self.posted[w].fetch_and(!b, Ordering::Relaxed);
            }
            batch.len() - posted
        };
        for &slot in slots {
            if slot >= self.recv.slots {
                tracing::error!(slot, "SRQ slot out of range");
                continue;
            }
            let (w, b) = Self::bit(slot);
            if self.posted[w].fetch_or(b, Ordering::Relaxed) & b != 0 {
                tracing::error!(slot, "SRQ slot posted twice; ignored");
                continue;
            }
            batch[n] = slot;
            n += 1;
            if n == RECV_BATCH {
                lost += flush(&batch[..n], scratch);
                n = 0;
            }
        }
        if n > 0 {
            lost += flush(&batch[..n], scratch);
        }
        lost
    }
}

/// One RDMA device in use.
#[derive(Debug)]
pub struct Device {
    name: String,
    ctx: Arc<Context>,
    /// The RDMA/CM id whose device context this is (it stays alive with the
    /// device); its DEVICE_REMOVAL event tells the target the device is
    /// going away even when no connection is left on it.
    anchor: CmIdHandle,
    pd: Arc<ProtectionDomain>,
    attr: DeviceAttr,
    ram: Vec<MemoryRegion>,
    srq: Option<Arc<SrqRing>>,
}

impl Device {
    /// Opens the device state on `ctx` (the context RDMA/CM uses for the
    /// device, borrowed from the id `anchor`), registers every RAM LUN
    /// buffer for RDMA READ landing (local write) and RDMA WRITE sourcing,
    /// and creates the shared receive queue if asked to.
    pub fn new(
        ctx: Arc<Context>,
        anchor: CmIdHandle,
        ram: &[Arc<DmaBuf>],
        srq: Option<&SrqSettings>,
    ) -> rdma::Result<Device> {
        let attr = ctx.query_device()?;
        let pd = ProtectionDomain::new(&ctx)?;
        let ram = ram
            .iter()
            .map(|b| MemoryRegion::register(&pd, b.clone(), AccessFlags::LOCAL_WRITE))
            .collect::<rdma::Result<Vec<_>>>()?;
        let name = ctx.name();
        let srq = match srq {
            None => None,
            Some(_) if attr.max_srq == 0 || attr.max_srq_wr == 0 => {
                return Err(rdma::Error::Invalid("device has no shared receive queues"));
            }
            Some(s) => {
                let slots = srq_slots(s, attr.max_srq_wr);
                let size = srq_slot_size(s.max_it_iu_len);
                let ring = SrqRing::new(&pd, slots, size)?;
                tracing::info!(
                    device = %name,
                    slots,
                    slot_size = size,
                    max_srq_wr = attr.max_srq_wr,
                    "shared receive queue"
                );
                Some(Arc::new(ring))
            }
        };
        Ok(Device {
            name,
            ctx,
            anchor,
            pd,
            attr,
            ram,
            srq,
        })
    }

    /// Device name (e.g. `rxe0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verbs context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The RDMA/CM id the context belongs to.
    pub fn anchor(&self) -> CmIdHandle {
        self.anchor
    }

    /// The protection domain every channel on this device uses.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// Device limits.
    pub fn attr(&self) -> &DeviceAttr {
        &self.attr
    }

    /// The shared receive queue, in SRQ mode.
    pub fn srq(&self) -> Option<&Arc<SrqRing>> {
        self.srq.as_ref()
    }

    /// The memory region of the RAM LUN whose buffer starts at `base`.
    pub fn ram_mr(&self, base: u64) -> Option<&MemoryRegion> {
        self.ram.iter().find(|m| m.addr() == base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srq_geometry() {
        let linux = SrqSettings {
            slots: None,
            max_it_iu_len: 8260,
            queue_depth: 128,
        };
        assert_eq!(srq_slot_size(8260), 8320);
        // 4096 slots of 8320 bytes fit the default budget.
        assert_eq!(srq_slots(&linux, 1 << 20), 4096);
        // The device limit wins.
        assert_eq!(srq_slots(&linux, 1023), 1023);
        // srptd's default largest IU (64 KiB + 68): the ring shrinks to the
        // budget.
        let big = SrqSettings {
            max_it_iu_len: 65604,
            ..linux
        };
        assert_eq!(srq_slot_size(65604), 65664);
        assert_eq!(srq_slots(&big, 1 << 20), (64 << 20) / 65664);
        // ... but always holds one channel's credits plus the reserve.
        let huge = SrqSettings {
            max_it_iu_len: 1 << 20,
            ..linux
        };
        assert_eq!(srq_slots(&huge, 1 << 20), 130);
        // Asked for explicitly: capped by the device and the id width only.
        let asked = SrqSettings {
            slots: Some(100_000),
            ..linux
        };
        assert_eq!(srq_slots(&asked, 1 << 20), MAX_SRQ_SLOTS);
        assert_eq!(srq_slots(&asked, 16384), 16384);
        assert_eq!(
            srq_slots(
                &SrqSettings {
                    slots: Some(0),
                    ..linux
                },
                16
            ),
            1
        );
    }
}
