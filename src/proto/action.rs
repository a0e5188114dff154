//! What the channel asks its driver to do, and how completions name the
//! work they complete.

/// A command of a channel: the index of its entry in the channel's command
/// table, which is also its send slot. Its width is the index field of
/// [`WrId`] ([`WrId::INDEXES`] values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CmdId(pub u16);

impl CmdId {
    /// The largest id.
    pub const MAX: CmdId = CmdId(u16::MAX);

    /// The table index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for CmdId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Which registered memory a local scatter/gather entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The channel's receive ring (immediate data, IUs).
    Recv,
    /// The channel's send ring (response IUs).
    Send,
    /// The channel's data pool (bounce buffers).
    Pool,
    /// The channel's descriptor table pool (fetched indirect tables).
    Table,
    /// A RAM backstore served with zero copies; `base` is the address of its
    /// buffer, by which the driver finds the memory region.
    Ram {
        /// `DmaBuf::addr()` of the backstore buffer.
        base: u64,
    },
}

/// A local buffer piece: `len` bytes at `offset` in `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalSeg {
    /// Memory region.
    pub region: Region,
    /// Byte offset inside the region's buffer.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Work request opcodes the channel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrOpcode {
    /// Fetch from initiator memory into `local` (data-out, descriptor tables).
    RdmaRead,
    /// Store `local` into initiator memory (data-in).
    RdmaWrite,
    /// Send the IU in `local`.
    Send,
}

/// One send-queue work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkRequest {
    /// Returned in the completion; pass it back to `Channel::handle_completion`.
    pub wr_id: u64,
    /// Operation.
    pub opcode: WrOpcode,
    /// Local buffer.
    pub local: LocalSeg,
    /// Initiator virtual address (RDMA only).
    pub remote_addr: u64,
    /// Initiator R_Key (RDMA only).
    pub rkey: u32,
    /// Whether this request generates a completion when it succeeds.
    pub signaled: bool,
}

/// An action for the driver, in the order it must be carried out.
///
/// Receives must be posted as they come; sends may be batched and posted
/// with one doorbell at the end of a poll pass, in order (a receive posted
/// earlier than a send never hurts; the channel always emits the receive
/// that backs a returned credit before the send that returns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// (Re)post receive slot `slot` (wr_id = [`WrId::recv`]).
    PostRecv {
        /// Slot index in the receive ring.
        slot: u32,
    },
    /// Post a send-queue work request.
    PostSend(WorkRequest),
    /// Run the SCSI command of context `cmd` (see `Channel::exec_request`)
    /// and report with `Channel::handle_exec_done`.
    Execute {
        /// Context.
        cmd: CmdId,
    },
    /// End the connection: disconnect, move the queue pair to the error
    /// state and drain it, telling the channel what the drain sees
    /// (`Channel::handle_send_queue_drained`, `handle_receives_flushed`,
    /// `handle_timeout`).
    Disconnect,
    /// Nothing is outstanding any more; the channel's resources may be freed.
    Closed,
}

/// Kinds of work a completion can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WrKind {
    /// A receive slot.
    Recv = 1,
    /// RDMA READ of an external descriptor table.
    TableRead = 2,
    /// A batch of data-out RDMA READs.
    DataRead = 3,
    /// A batch of data-in RDMA WRITEs posted ahead of the response.
    DataWrite = 4,
    /// The response SEND of a command (after its data-in writes, if any).
    Response = 5,
    /// A target-initiated IU (SRP_CRED_REQ, SRP_T_LOGOUT).
    TargetIu = 6,
    /// An unsignaled request; only seen when it fails.
    Unsignaled = 7,
}

/// Work request identifier layout: bits 0..16 index, 16..24 kind,
/// 24..40 number of send-queue entries the completion retires,
/// 40..64 generation of the context. The index and generation widths are
/// the bounds of command ids, receive slot numbers and generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrId {
    /// Context index or receive slot.
    pub index: u32,
    /// Kind of work.
    pub kind: WrKind,
    /// Send-queue entries retired by this completion (signaled chains).
    pub count: u16,
    /// Context generation (low 24 bits), to reject stale completions.
    pub gen: u32,
}

impl WrId {
    const INDEX_BITS: u32 = 16;
    const KIND_SHIFT: u32 = 16;
    const COUNT_SHIFT: u32 = 24;
    const GEN_SHIFT: u32 = 40;
    /// Command contexts (and receive slots) a work request id can name:
    /// indexes are below this.
    pub const INDEXES: u32 = 1 << Self::INDEX_BITS;
    /// The generation bits a work request id keeps.
    pub const GEN_MASK: u32 = 0xff_ffff;

    /// Encodes into a 64-bit work request id.
    pub fn encode(self) -> u64 {
        (self.index & (Self::INDEXES - 1)) as u64
            | (self.kind as u64) << Self::KIND_SHIFT
            | (self.count as u64) << Self::COUNT_SHIFT
            | ((self.gen & Self::GEN_MASK) as u64) << Self::GEN_SHIFT
    }

    /// The id of receive slot `slot`.
    pub fn recv(slot: u32) -> u64 {
        WrId {
            index: slot,
            kind: WrKind::Recv,
            count: 0,
            gen: 0,
        }
        .encode()
    }

    /// Decodes; `None` for values the channel never produced.
    pub fn decode(v: u64) -> Option<WrId> {
        let kind = match (v >> Self::KIND_SHIFT) as u8 {
            1 => WrKind::Recv,
            2 => WrKind::TableRead,
            3 => WrKind::DataRead,
            4 => WrKind::DataWrite,
            5 => WrKind::Response,
            6 => WrKind::TargetIu,
            7 => WrKind::Unsignaled,
            _ => return None,
        };
        Some(WrId {
            index: (v as u32) & (Self::INDEXES - 1),
            kind,
            count: (v >> Self::COUNT_SHIFT) as u16,
            gen: (v >> Self::GEN_SHIFT) as u32,
        })
    }
}

/// A command context's generation, as kept in [`WrId::gen`]: a completion
/// naming an older generation of the same context is stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation(u32);

impl Generation {
    /// The generation after this one (wrapping within [`WrId::GEN_MASK`]).
    pub fn next(self) -> Generation {
        Generation(self.0.wrapping_add(1) & WrId::GEN_MASK)
    }

    /// The value carried in a work request id.
    pub fn get(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_id_round_trip() {
        let w = WrId {
            index: 513,
            kind: WrKind::DataRead,
            count: 4,
            gen: 0xabcdef,
        };
        assert_eq!(WrId::decode(w.encode()), Some(w));
        assert_eq!(WrId::decode(WrId::recv(9)).unwrap().kind, WrKind::Recv);
        assert_eq!(WrId::decode(0), None);
        // Every field keeps its full width.
        let max = WrId {
            index: WrId::INDEXES - 1,
            kind: WrKind::Response,
            count: u16::MAX,
            gen: WrId::GEN_MASK,
        };
        assert_eq!(WrId::decode(max.encode()), Some(max));
        assert_eq!(u32::from(CmdId::MAX.0) + 1, WrId::INDEXES);
    }

    #[test]
    fn generation_wraps_within_the_id() {
        let g = Generation(WrId::GEN_MASK);
        assert_eq!(g.next().get(), 0);
        assert_eq!(Generation::default().next().get(), 1);
    }
}
