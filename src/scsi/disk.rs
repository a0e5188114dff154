//! The device server of one direct-access logical unit (SBC-3 / SPC-4):
//! validates decoded commands against the LUN's geometry and executes them
//! on its backstore.

use std::sync::Arc;

use super::backstore::Backstore;
use super::caw::CawLock;
use super::cdb::{self, be16, be32, be64, Cmd};
use super::sense::Sense;
use super::{DataDir, DirectIo, Plan};
use crate::mem::DmaBuf;

/// T10 vendor identification (SPC-4 6.6.2), 8 bytes, space padded.
pub const VENDOR: &[u8; 8] = b"SRPTD   ";
/// Product identification, 16 bytes.
pub const PRODUCT: &[u8; 16] = b"srptd disk      ";
/// Product revision level, 4 bytes.
pub const REVISION: &[u8; 4] = b"0001";

/// Maximum UNMAP block descriptors per command (block limits VPD).
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Bytes a WRITE SAME may cover on a file LUN (it is written out).
const MAX_WRITE_SAME_BYTES_FILE: u64 = 256 << 20;

/// Mode pages (SPC-4 7.5 / SBC-3 6.4).
const PAGE_RW_ERROR_RECOVERY: u8 = 0x01;
const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1c;
const PAGE_ALL: u8 = 0x3f;
/// The pages served, in ascending page code order (the order of "all
/// pages", SPC-4 6.11).
const MODE_PAGES: [u8; 4] = [
    PAGE_RW_ERROR_RECOVERY,
    PAGE_CACHING,
    PAGE_CONTROL,
    PAGE_INFORMATIONAL_EXCEPTIONS,
];

/// VPD pages supported, in ascending order (SPC-4 7.8.13).
const VPD_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

/// One logical unit: its backstore and identity.
#[derive(Debug)]
pub struct Disk {
    store: Arc<dyn Backstore>,
    serial: String,
    naa: [u8; 16],
    max_xfer_blocks: u32,
    max_ws_blocks: u32,
    /// Logical block provisioning is offered (LBPME, UNMAP; SBC-3 4.7).
    thin: bool,
    caw: CawLock,
}

/// Copies as much of `bytes` as fits in `len` into `data[off..]`; returns
/// the count (a data-in transfer is truncated to the allocation length,
/// SPC-4 4.2.5.6).
fn put(data: &DmaBuf, off: usize, len: u32, bytes: &[u8]) -> u32 {
    let n = bytes.len().min(len as usize);
    data.write(off, &bytes[..n]);
    n as u32
}

/// Standard INQUIRY data (SPC-4 6.6.2) with `byte0` = peripheral qualifier
/// and device type.
pub fn standard_inquiry(byte0: u8) -> Vec<u8> {
    let mut d = vec![0u8; 74];
    d[0] = byte0;
    d[2] = 0x06; // VERSION: SPC-4
    d[3] = 0x02; // RESPONSE DATA FORMAT 2; NORMACA = 0, HISUP = 0
    d[4] = (d.len() - 5) as u8; // ADDITIONAL LENGTH
    d[5] = super::alua::TPGS << 4; // TPGS (SPC-4 6.6.2, table 144)
    d[7] = 0x02; // CMDQUE (SAM-5 8.5.4: full task management model)
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    // VERSION DESCRIPTORS (SPC-4 table 148): SAM-5, SPC-4, SBC-3, SRP.
    for (i, v) in [0x00a0u16, 0x0460, 0x04c0, 0x0940].iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// Peripheral qualifier 011b, device type 1Fh: no logical unit here
/// (SPC-4 6.6.2, table 141).
pub const PQ_NO_LUN: u8 = 0x7f;

impl Disk {
    /// A logical unit on `store` with the given unit serial number and NAA
    /// designator. `max_transfer_bytes` caps READ/WRITE transfers (block
    /// limits VPD MAXIMUM TRANSFER LENGTH).
    pub fn new(store: Arc<dyn Backstore>, serial: String, naa: [u8; 16], max_transfer_bytes: u32) -> Disk {
        let bs = store.block_size();
        let max_xfer_blocks = (max_transfer_bytes / bs).max(1);
        let ws_limit = if store.is_blocking() {
            MAX_WRITE_SAME_BYTES_FILE / u64::from(bs)
        } else {
            u64::from(u32::MAX)
        };
        let max_ws_blocks = ws_limit.min(store.num_blocks()).min(u64::from(u32::MAX)) as u32;
        Disk {
            thin: store.thin_provisioned(),
            caw: CawLock::new(bs, max_xfer_blocks),
            store,
            serial,
            naa,
            max_xfer_blocks,
            max_ws_blocks,
        }
    }

    /// The backstore.
    pub fn store(&self) -> &Arc<dyn Backstore> {
        &self.store
    }

    /// The COMPARE AND WRITE lock (asynchronous writes check in with it).
    pub(super) fn caw(&self) -> &CawLock {
        &self.caw
    }

    /// The unit serial number (VPD page 80h).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The NAA IEEE Registered Extended designator (VPD page 83h).
    pub fn naa(&self) -> [u8; 16] {
        self.naa
    }

    /// MAXIMUM TRANSFER LENGTH in blocks.
    pub fn max_transfer_blocks(&self) -> u32 {
        self.max_xfer_blocks
    }

    fn bs(&self) -> u32 {
        self.store.block_size()
    }

    /// Logical block provisioning is offered (LBPME).
    pub(super) fn thin(&self) -> bool {
        self.thin
    }

    /// Whether WRITE SAME deallocates instead of writing. SBC-3 5.44
    /// (UNMAP bit) with 4.7.3.4: with UNMAP = 1 the device server may
    /// deallocate when deallocated blocks read back as the pattern
    /// (LBPRZ = 1 and an all-zero block, `zero_pattern`); otherwise it
    /// writes. Non-thin LUNs (LBPWS = 0) write (LIO rejects the command
    /// instead; writing is what SBC-3 allows).
    pub(super) fn write_same_deallocates(&self, unmap: bool, zero_pattern: bool) -> bool {
        unmap && zero_pattern && self.thin() && self.store.limits().unmap_zeroes
    }

    /// Offers logical block provisioning only if `on` (and the backstore
    /// can deallocate): a fully provisioned LUN reports LBPME = 0 and does
    /// not take UNMAP.
    pub fn with_thin_provisioning(mut self, on: bool) -> Disk {
        self.thin = on && self.store.thin_provisioned();
        self
    }

    /// LBA range check: SBC-3 4.5 — a command whose LBA plus length exceeds
    /// the capacity is LOGICAL BLOCK ADDRESS OUT OF RANGE (an LBA equal to
    /// the capacity with no blocks is not an error).
    fn range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.store.num_blocks() => Ok(()),
            _ => Err(Sense::lba_out_of_range().with_info(lba)),
        }
    }

    fn writable(&self) -> Result<(), Sense> {
        // SBC-3 4.11: writes to a write-protected medium get DATA PROTECT,
        // WRITE PROTECTED.
        if self.store.read_only() {
            Err(Sense::write_protected())
        } else {
            Ok(())
        }
    }

    /// Checks a transfer of `blocks` against MAXIMUM TRANSFER LENGTH
    /// (SBC-3 6.5.3: a larger TRANSFER LENGTH is INVALID FIELD IN CDB).
    fn xfer(&self, blocks: u32, len_byte: u16) -> Result<u32, Sense> {
        if blocks > self.max_xfer_blocks {
            return Err(Sense::invalid_field_in_cdb_at(len_byte, None));
        }
        Ok(blocks * self.bs())
    }

    fn direct(&self, lba: u64, len: u32) -> Option<DirectIo> {
        let buf = self.store.dma_buf()?;
        (len > 0).then(|| DirectIo {
            buf: Arc::clone(buf),
            offset: lba * u64::from(self.bs()),
            len,
        })
    }

    /// Validates `cmd` against this LUN and says what data moves.
    /// REQUEST SENSE and REPORT LUNS are the nexus's business and plan as
    /// their allocation length here.
    /// `opcode` is the CDB's first byte: group 4 has 16-byte CDBs, whose
    /// length fields sit elsewhere (for the sense field pointer).
    pub fn plan(&self, cmd: &Cmd, opcode: u8) -> Result<Plan, Sense> {
        let len_byte = |ten: u16, sixteen: u16| if opcode >> 5 == 4 { sixteen } else { ten };
        Ok(match *cmd {
            Cmd::TestUnitReady | Cmd::StartStopUnit => Plan::none(),
            Cmd::RequestSense { alloc, .. } | Cmd::ReportLuns { alloc, .. } => Plan::new(DataDir::In, alloc),
            Cmd::Inquiry { evpd, page, alloc } => {
                // SPC-4 6.6.1: EVPD = 0 with a nonzero PAGE CODE, or an
                // unsupported VPD page, is INVALID FIELD IN CDB.
                if (!evpd && page != 0) || (evpd && !VPD_PAGES.contains(&page)) {
                    return Err(Sense::invalid_field_in_cdb_at(2, None));
                }
                Plan::new(DataDir::In, alloc)
            }
            Cmd::ModeSense {
                pc,
                page,
                subpage,
                alloc,
                ..
            } => {
                // SPC-4 6.11: saved values not implemented → SAVING
                // PARAMETERS NOT SUPPORTED.
                if pc == 3 {
                    return Err(Sense::saving_parameters_not_supported().with_field(true, 2, Some(7)));
                }
                if page != PAGE_ALL && !MODE_PAGES.contains(&page) {
                    return Err(Sense::invalid_field_in_cdb_at(2, Some(5)));
                }
                // No subpages: only 00h, or FFh with "all pages" (SPC-4 6.11).
                if !(subpage == 0 || (page == PAGE_ALL && subpage == 0xff)) {
                    return Err(Sense::invalid_field_in_cdb_at(3, Some(7)));
                }
                Plan::new(DataDir::In, alloc)
            }
            Cmd::ModeSelect { sp, len, .. } => {
                // SPC-4 6.9: SP = 1 without saved pages → INVALID FIELD IN CDB.
                if sp {
                    return Err(Sense::invalid_field_in_cdb_at(1, Some(0)));
                }
                Plan::new(DataDir::Out, len)
            }
            Cmd::ReadCapacity10 => Plan::new(DataDir::In, 8),
            Cmd::ReadCapacity16 { alloc } => Plan::new(DataDir::In, alloc),
            Cmd::Read { lba, blocks, .. } => {
                self.range(lba, u64::from(blocks))?;
                let len = self.xfer(blocks, len_byte(7, 10))?;
                Plan {
                    direct: self.direct(lba, len),
                    ..Plan::new(DataDir::In, len)
                }
            }
            Cmd::Write { lba, blocks, .. } => {
                self.writable()?;
                self.range(lba, u64::from(blocks))?;
                let len = self.xfer(blocks, len_byte(7, 10))?;
                Plan {
                    direct: self.direct(lba, len).filter(|_| self.caw.zero_copy_writes()),
                    ..Plan::new(DataDir::Out, len)
                }
            }
            Cmd::CompareAndWrite { lba, blocks, .. } => {
                self.writable()?;
                self.range(lba, u64::from(blocks))?;
                self.caw.plan(blocks)?
            }
            Cmd::WriteAndVerify { lba, blocks, bytchk } => {
                // SBC-3 5.43 table 91: BYTCHK 00b write then verify the
                // medium, 01b write then compare with the data sent; 10b is
                // reserved and 11b not supported: INVALID FIELD IN CDB.
                if bytchk > 1 {
                    return Err(Sense::invalid_field_in_cdb_at(1, Some(2)));
                }
                self.writable()?;
                self.range(lba, u64::from(blocks))?;
                // Not zero-copy: the compare needs the data apart from the
                // medium.
                Plan::new(DataDir::Out, self.xfer(blocks, len_byte(7, 10))?)
            }
            Cmd::Verify { lba, blocks, bytchk } => {
                // SBC-3 5.33 table 75: BYTCHK 00b medium verify, 01b compare;
                // 10b is reserved, 11b (single-block compare) is not
                // supported: INVALID FIELD IN CDB.
                if bytchk > 1 {
                    return Err(Sense::invalid_field_in_cdb_at(1, Some(2)));
                }
                self.range(lba, u64::from(blocks))?;
                if bytchk == 0 {
                    Plan::none()
                } else {
                    Plan::new(DataDir::Out, self.xfer(blocks, len_byte(7, 10))?)
                }
            }
            Cmd::SyncCache { lba, blocks } => {
                // SBC-3 5.22: NUMBER OF LOGICAL BLOCKS 0 means "to the last
                // LBA"; the range is still checked.
                if blocks == 0 {
                    if lba >= self.store.num_blocks() {
                        return Err(Sense::lba_out_of_range().with_info(lba));
                    }
                } else {
                    self.range(lba, u64::from(blocks))?;
                }
                Plan::none()
            }
            Cmd::WriteSame {
                lba, blocks, ndob, ..
            } => {
                self.writable()?;
                let nb_byte = len_byte(7, 10);
                // SBC-3 5.44: 0 blocks with WSNZ = 1 (block limits VPD), or
                // more than MAXIMUM WRITE SAME LENGTH → INVALID FIELD IN CDB.
                if blocks == 0 || blocks > self.max_ws_blocks {
                    return Err(Sense::invalid_field_in_cdb_at(nb_byte, None));
                }
                self.range(lba, u64::from(blocks))?;
                // SBC-3 5.45: NDOB = 1 means no data-out; the block is zeros.
                if ndob {
                    Plan::none()
                } else {
                    Plan::new(DataDir::Out, self.bs())
                }
            }
            Cmd::Unmap { len } => {
                // SBC-3 4.7.3.4: UNMAP is only supported with LBPU = 1.
                // (LIO answers the same way when emulate_tpu is off.)
                if !self.thin() {
                    return Err(Sense::invalid_opcode());
                }
                self.writable()?;
                // SBC-3 5.28: PARAMETER LIST LENGTH 1..7 → PARAMETER LIST
                // LENGTH ERROR; 0 is not an error and unmaps nothing.
                if (1..8).contains(&len) {
                    return Err(Sense::parameter_list_length_error());
                }
                Plan::new(DataDir::Out, len)
            }
            Cmd::PersistentReserveIn(pr) => Plan::new(DataDir::In, pr.alloc),
            Cmd::PersistentReserveOut(pr) => {
                pr.check_length()?;
                Plan::new(DataDir::Out, pr.len)
            }
            Cmd::Reserve | Cmd::Release => Plan::none(),
            Cmd::ReportTargetPortGroups { alloc, .. } | Cmd::ReceiveCopyResults { alloc, .. } => {
                Plan::new(DataDir::In, alloc)
            }
            Cmd::ExtendedCopy { len } => super::xcopy::plan(len)?,
            Cmd::ReportOpcodes { options, alloc, .. } => {
                // SPC-4 6.35.1 table 250: reporting options above 011b are
                // reserved.
                if options > 3 {
                    return Err(Sense::invalid_field_in_cdb_at(2, Some(2)));
                }
                Plan::new(DataDir::In, alloc)
            }
        })
    }

    /// Executes `cmd` with `data[off..off+len]` as its buffer; returns the
    /// data-in byte count.
    pub fn execute(&self, cmd: &Cmd, opcode: u8, data: &DmaBuf, off: usize, len: u32) -> Result<u32, Sense> {
        let plan = self.plan(cmd, opcode)?;
        if !data.contains(off as u64, u64::from(len)) {
            tracing::error!("execute: buffer range {off}+{len} outside {} bytes", data.len());
            return Err(Sense::internal_target_failure());
        }
        // Data-out must be complete; the transport checks the descriptors
        // against the CDB, so a shortfall here is a transport error.
        if plan.dir == DataDir::Out && len < plan.len {
            return Err(Sense::invalid_field_in_command_iu());
        }
        let bs = self.bs() as usize;
        // Kept apart from a running COMPARE AND WRITE (caw.rs).
        let _held = self.caw.hold_for(cmd);
        match *cmd {
            Cmd::TestUnitReady | Cmd::StartStopUnit => Ok(0),
            Cmd::RequestSense { .. } | Cmd::ReportLuns { .. } => Ok(0),
            // Reservations are the nexus's business (they need the I_T
            // nexus and the LUN's shared state); never sent here.
            // So are the target ports (alua.rs).
            Cmd::PersistentReserveIn(_)
            | Cmd::PersistentReserveOut(_)
            | Cmd::Reserve
            | Cmd::Release
            | Cmd::ReportTargetPortGroups { .. }
            | Cmd::ExtendedCopy { .. }
            | Cmd::ReceiveCopyResults { .. } => Err(Sense::internal_target_failure()),
            Cmd::Inquiry { evpd, page, .. } => {
                let d = if evpd {
                    self.vpd(page)
                } else {
                    let mut d = standard_inquiry(0x00);
                    // 3PC: the target has a copy manager (EXTENDED COPY,
                    // SPC-4 6.6.2; xcopy.rs).
                    d[5] |= 0x08;
                    d
                };
                Ok(put(data, off, len, &d))
            }
            Cmd::ModeSense {
                ten,
                dbd,
                llbaa,
                pc,
                page,
                ..
            } => Ok(put(data, off, len, &self.mode_sense(ten, dbd, llbaa, pc, page))),
            Cmd::ModeSelect { ten, pf, .. } => data
                .with_bytes(off, plan.len as usize, |p| self.mode_select(ten, pf, p))
                .map(|()| 0),
            Cmd::ReadCapacity10 => {
                // SBC-3 5.23: RETURNED LOGICAL BLOCK ADDRESS is FFFFFFFFh
                // when the last LBA does not fit.
                let last = self.store.num_blocks() - 1;
                let mut d = [0u8; 8];
                d[..4].copy_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
                d[4..].copy_from_slice(&self.bs().to_be_bytes());
                Ok(put(data, off, len, &d))
            }
            Cmd::ReadCapacity16 { .. } => {
                // SBC-3 5.24, table 67.
                let mut d = [0u8; 32];
                d[..8].copy_from_slice(&(self.store.num_blocks() - 1).to_be_bytes());
                d[8..12].copy_from_slice(&self.bs().to_be_bytes());
                let lim = self.store.limits();
                // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
                d[13] = (lim.physical_block / self.bs()).max(1).trailing_zeros() as u8 & 0x0f;
                if self.thin() {
                    d[14] = 0x80; // LBPME
                    if lim.unmap_zeroes {
                        d[14] |= 0x40; // LBPRZ
                    }
                }
                Ok(put(data, off, len, &d))
            }
            Cmd::Read { lba, .. } => {
                let n = plan.len as usize;
                if n == 0 || self.is_direct(&plan, data, off) {
                    return Ok(plan.len);
                }
                self.store
                    .read(lba, data, off, n)
                    .map_err(|e| io_sense(&e, false, lba))?;
                Ok(plan.len)
            }
            Cmd::Write { lba, fua, .. } => {
                let n = plan.len as usize;
                if n == 0 {
                    return Ok(0);
                }
                if self.is_direct(&plan, data, off) {
                    // Data already in place; FUA on RAM: nothing to flush.
                    return Ok(0);
                }
                self.store
                    .write(lba, data, off, n, fua)
                    .map_err(|e| io_sense(&e, true, lba))?;
                Ok(0)
            }
            Cmd::WriteAndVerify { lba, bytchk, .. } => {
                let n = plan.len as usize;
                if n == 0 {
                    return Ok(0);
                }
                // Written through to the medium (FUA) before it is verified.
                self.store
                    .write(lba, data, off, n, true)
                    .map_err(|e| io_sense(&e, true, lba))?;
                if bytchk == 1 {
                    self.compare(lba, data, off, n)?;
                }
                Ok(0)
            }
            Cmd::CompareAndWrite { lba, blocks, fua } => {
                self.caw.execute(&*self.store, lba, blocks, fua, data, off)?;
                Ok(0)
            }
            Cmd::Verify { lba, blocks, bytchk } => {
                if bytchk == 0 || blocks == 0 {
                    return Ok(0);
                }
                self.compare(lba, data, off, plan.len as usize)?;
                Ok(0)
            }
            Cmd::SyncCache { lba, .. } => {
                self.store.flush().map_err(|e| io_sense(&e, true, lba))?;
                Ok(0)
            }
            Cmd::WriteSame {
                lba,
                blocks,
                unmap,
                ndob,
            } => {
                let pattern = if ndob {
                    vec![0u8; bs]
                } else {
                    data.with_bytes(off, bs, |p| p.to_vec())
                };
                let zero = pattern.iter().all(|&b| b == 0);
                let r = if self.write_same_deallocates(unmap, zero) {
                    self.store.unmap(lba, u64::from(blocks))
                } else {
                    self.store.write_same(lba, u64::from(blocks), &pattern)
                };
                r.map_err(|e| io_sense(&e, true, lba))?;
                Ok(0)
            }
            Cmd::Unmap { .. } => {
                if plan.len == 0 {
                    return Ok(0);
                }
                let ranges = data.with_bytes(off, plan.len as usize, |p| self.parse_unmap(p))?;
                for (lba, nb) in ranges {
                    self.store.unmap(lba, nb).map_err(|e| io_sense(&e, true, lba))?;
                }
                Ok(0)
            }
            Cmd::ReportOpcodes {
                rctd,
                options,
                opcode,
                sa,
                ..
            } => Ok(put(
                data,
                off,
                len,
                &self.report_opcodes(rctd, options, opcode, sa)?,
            )),
        }
    }

    /// Writes `buf[..len]` at `lba` for EXTENDED COPY (xcopy.rs), kept
    /// apart from a running COMPARE AND WRITE as a WRITE is.
    pub(super) fn copy_write(&self, lba: u64, buf: &DmaBuf, len: usize) -> Result<(), Sense> {
        let _held = self.caw.hold_for_write();
        self.store
            .write(lba, buf, 0, len, false)
            .map_err(|e| io_sense(&e, true, lba))
    }

    fn is_direct(&self, plan: &Plan, data: &DmaBuf, off: usize) -> bool {
        plan.direct
            .as_ref()
            .is_some_and(|d| std::ptr::eq(&*d.buf, data) && d.offset == off as u64)
    }

    // ------------------------------------------------------------ VPD

    /// The Device Identification VPD page (SPC-4 7.8.6) with the
    /// designators of the target port the command came through appended.
    pub(super) fn device_identification(&self, port: &[u8]) -> Vec<u8> {
        let mut d = self.vpd(0x83);
        d.extend_from_slice(port);
        let n = (d.len() - 4) as u16;
        d[2..4].copy_from_slice(&n.to_be_bytes());
        d
    }

    /// VPD page `page` (SPC-4 7.8; SBC-3 6.5); must be in [`VPD_PAGES`].
    fn vpd(&self, page: u8) -> Vec<u8> {
        let mut d = vec![0u8, page, 0, 0];
        match page {
            // SPC-4 7.8.13 Supported VPD Pages.
            0x00 => d.extend_from_slice(&VPD_PAGES),
            // SPC-4 7.8.17 Unit Serial Number.
            0x80 => d.extend_from_slice(self.serial.as_bytes()),
            // SPC-4 7.8.6 Device Identification.
            0x83 => {
                // NAA designator: code set 1 (binary), association 0 (the
                // logical unit), type 3 (NAA) — SPC-4 7.8.6.6.
                d.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
                d.extend_from_slice(&self.naa);
                // T10 vendor ID designator: code set 2 (ASCII), type 1
                // (SPC-4 7.8.6.4): vendor + serial.
                let id_len = VENDOR.len() + self.serial.len();
                d.extend_from_slice(&[0x02, 0x01, 0x00, id_len as u8]);
                d.extend_from_slice(VENDOR);
                d.extend_from_slice(self.serial.as_bytes());
            }
            // SBC-3 6.5.3 Block Limits.
            0xb0 => {
                d.resize(64, 0);
                d[4] = 0x01; // WSNZ
                d[5] = self.caw.max_blocks() as u8; // MAXIMUM COMPARE AND WRITE LENGTH
                let lim = self.store.limits();
                let blocks = |bytes: u32| (bytes / self.bs()).max(1);
                let gran = blocks(lim.granularity).min(u32::from(u16::MAX));
                d[6..8].copy_from_slice(&(gran as u16).to_be_bytes()); // OPTIMAL TRANSFER LENGTH GRANULARITY
                d[8..12].copy_from_slice(&self.max_xfer_blocks.to_be_bytes());
                if lim.optimal_transfer > 0 {
                    let opt = blocks(lim.optimal_transfer).min(self.max_xfer_blocks);
                    d[12..16].copy_from_slice(&opt.to_be_bytes()); // OPTIMAL TRANSFER LENGTH
                }
                if self.thin() {
                    let max_unmap = (lim.max_unmap / u64::from(self.bs()))
                        .min(self.store.num_blocks())
                        .min(u64::from(u32::MAX)) as u32;
                    d[20..24].copy_from_slice(&max_unmap.to_be_bytes());
                    d[24..28].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
                    // OPTIMAL UNMAP GRANULARITY
                    d[28..32].copy_from_slice(&blocks(lim.unmap_granularity).to_be_bytes());
                }
                d[36..44].copy_from_slice(&u64::from(self.max_ws_blocks).to_be_bytes());
            }
            // SBC-3 6.5.2 Block Device Characteristics.
            0xb1 => {
                d.resize(64, 0);
                d[5] = 0x01; // MEDIUM ROTATION RATE 0001h: non-rotating
            }
            // SBC-3 6.5.4 Logical Block Provisioning.
            0xb2 => {
                d.resize(8, 0);
                if self.thin() {
                    d[5] = 0x80 | 0x40 | 0x20; // LBPU, LBPWS, LBPWS10
                    if self.store.limits().unmap_zeroes {
                        d[5] |= 0x04; // LBPRZ
                    }
                    d[6] = 0x02; // PROVISIONING TYPE: thin
                }
            }
            _ => unreachable!("unsupported VPD page {page:#x} passed plan"),
        }
        let n = (d.len() - 4) as u16;
        d[2..4].copy_from_slice(&n.to_be_bytes());
        d
    }

    /// Compares `n` bytes of the medium at `lba` with `data[off..]`:
    /// MISCOMPARE with INFORMATION = the offset of the first byte that
    /// differs (SBC-3 5.33, 5.43).
    fn compare(&self, lba: u64, data: &DmaBuf, off: usize, n: usize) -> Result<(), Sense> {
        let tmp = DmaBuf::new(n).map_err(|_| Sense::internal_target_failure())?;
        self.store
            .read(lba, &tmp, 0, n)
            .map_err(|e| io_sense(&e, false, lba))?;
        let mismatch = tmp.with_bytes(0, n, |m| {
            data.with_bytes(off, n, |d| m.iter().zip(d).position(|(a, b)| a != b))
        });
        match mismatch {
            Some(i) => Err(Sense::miscompare(i as u64)),
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------ mode pages

    /// Mode page `page` for page control `pc` (0 current, 1 changeable,
    /// 2 default; SPC-4 6.11 table 163).
    fn mode_page(&self, page: u8, pc: u8) -> Vec<u8> {
        let changeable = pc == 1;
        match page {
            PAGE_RW_ERROR_RECOVERY => {
                // SBC-3 6.4.7: no automatic reallocation (AWRE = ARRE = 0),
                // errors are reported (no TB/PER/DTE/DCR), no retry or
                // recovery time limits to state. Nothing is changeable.
                let mut p = vec![0u8; 12];
                p[0] = PAGE_RW_ERROR_RECOVERY;
                p[1] = 0x0a;
                p
            }
            PAGE_CACHING => {
                // SBC-3 6.4.5: WCE when writes may sit in a volatile cache.
                let mut p = vec![0u8; 20];
                p[0] = PAGE_CACHING;
                p[1] = 0x12;
                if !changeable && self.store.write_cache() {
                    p[2] = 0x04;
                }
                p
            }
            PAGE_CONTROL => {
                // SPC-4 7.5.8: D_SENSE = 0 (fixed sense), GLTSD = 1, QUEUE
                // ALGORITHM MODIFIER 1 (unrestricted reordering), QERR 00b,
                // UA_INTLCK_CTRL 00b, TAS 0. Nothing is changeable.
                let mut p = vec![0u8; 12];
                p[0] = PAGE_CONTROL;
                p[1] = 0x0a;
                if !changeable {
                    p[2] = 0x02;
                    p[3] = 0x10;
                }
                p
            }
            PAGE_INFORMATIONAL_EXCEPTIONS => {
                // SPC-4 7.5.11 (Informational Exceptions Control): the
                // device server has no failure prediction, so informational
                // exception operations are disabled (DEXCPT = 1) and never
                // reported (MRIE 0h, INTERVAL TIMER and REPORT COUNT 0).
                // Nothing is changeable.
                let mut p = vec![0u8; 12];
                p[0] = PAGE_INFORMATIONAL_EXCEPTIONS;
                p[1] = 0x0a;
                if !changeable {
                    p[2] = 0x08;
                }
                p
            }
            _ => Vec::new(),
        }
    }

    /// The block descriptor count field value (SBC-3 6.4.2: FFFFFFFFh in a
    /// short descriptor when the capacity does not fit).
    fn short_blocks(&self) -> u32 {
        u32::try_from(self.store.num_blocks()).unwrap_or(u32::MAX)
    }

    fn mode_sense(&self, ten: bool, dbd: bool, llbaa: bool, pc: u8, page: u8) -> Vec<u8> {
        let long = ten && llbaa;
        let mut bd = Vec::new();
        if !dbd {
            if long {
                // SBC-3 6.4.2.3 long LBA block descriptor.
                bd.extend_from_slice(&self.store.num_blocks().to_be_bytes());
                bd.extend_from_slice(&[0; 4]);
                bd.extend_from_slice(&self.bs().to_be_bytes());
            } else {
                // SBC-3 6.4.2.2 short LBA block descriptor.
                bd.extend_from_slice(&self.short_blocks().to_be_bytes());
                bd.push(0);
                bd.extend_from_slice(&self.bs().to_be_bytes()[1..]);
            }
        }
        let mut pages = Vec::new();
        if page == PAGE_ALL {
            for p in MODE_PAGES {
                pages.extend(self.mode_page(p, pc));
            }
        } else {
            pages.extend(self.mode_page(page, pc));
        }
        // SBC-3 6.4.1 device-specific parameter: WP, DPOFUA.
        let devspec = if self.store.read_only() { 0x80 } else { 0 } | 0x10;
        let mut d = if ten {
            let total = 8 + bd.len() + pages.len();
            let mut h = vec![0u8; 8];
            h[..2].copy_from_slice(&((total - 2) as u16).to_be_bytes());
            h[3] = devspec;
            h[4] = u8::from(long);
            h[6..8].copy_from_slice(&(bd.len() as u16).to_be_bytes());
            h
        } else {
            let total = 4 + bd.len() + pages.len();
            vec![(total - 1) as u8, 0, devspec, bd.len() as u8]
        };
        d.extend(bd);
        d.extend(pages);
        d
    }

    /// MODE SELECT: accepted only when every parameter equals its current
    /// value, since nothing is changeable (SPC-4 6.9: a value that is not
    /// changeable and differs → INVALID FIELD IN PARAMETER LIST).
    fn mode_select(&self, ten: bool, pf: bool, p: &[u8]) -> Result<(), Sense> {
        if p.is_empty() {
            return Ok(()); // SPC-4 6.9: zero length is not an error.
        }
        let hdr = if ten { 8 } else { 4 };
        if p.len() < hdr {
            return Err(Sense::parameter_list_length_error());
        }
        let (medium, bdl_at, bdl, long) = if ten {
            (p[2], 6u16, usize::from(be16(&p[6..])), p[4] & 1 != 0)
        } else {
            (p[1], 3u16, usize::from(p[3]), false)
        };
        if medium != 0 {
            return Err(Sense::invalid_field_in_parameter_list_at(
                if ten { 2 } else { 1 },
                None,
            ));
        }
        if ten && p[4] & !1 != 0 {
            return Err(Sense::invalid_field_in_parameter_list_at(4, None));
        }
        let want_bdl = if long { 16 } else { 8 };
        if bdl != 0 && bdl != want_bdl {
            return Err(Sense::invalid_field_in_parameter_list_at(bdl_at, None));
        }
        if p.len() < hdr + bdl {
            return Err(Sense::parameter_list_length_error());
        }
        if bdl != 0 {
            let b = &p[hdr..hdr + bdl];
            let (blocks, blen, blen_at) = if long {
                (be64(b), be32(&b[12..]), 12)
            } else {
                (u64::from(be32(b)), be32(&[0, b[5], b[6], b[7]]), 5)
            };
            // SBC-3 6.4.2: NUMBER OF LOGICAL BLOCKS 0 keeps the capacity.
            let cur = if long {
                self.store.num_blocks()
            } else {
                u64::from(self.short_blocks())
            };
            if blocks != 0 && blocks != cur {
                return Err(Sense::invalid_field_in_parameter_list_at(hdr as u16, None));
            }
            if blen != self.bs() {
                return Err(Sense::invalid_field_in_parameter_list_at(
                    (hdr + blen_at) as u16,
                    None,
                ));
            }
        }
        let mut pos = hdr + bdl;
        if pos < p.len() && !pf {
            // SPC-4 6.9: PF = 0 means vendor-specific page format, which
            // this device server does not have.
            return Err(Sense::invalid_field_in_cdb_at(1, Some(4)));
        }
        while pos < p.len() {
            if p.len() - pos < 2 {
                return Err(Sense::parameter_list_length_error());
            }
            let plen = usize::from(p[pos + 1]);
            if p.len() - pos < 2 + plen {
                return Err(Sense::parameter_list_length_error());
            }
            // SPF = 1: no subpages are implemented.
            if p[pos] & 0x40 != 0 {
                return Err(Sense::invalid_field_in_parameter_list_at(pos as u16, Some(6)));
            }
            let code = p[pos] & 0x3f;
            let cur = self.mode_page(code, 0);
            if cur.is_empty() {
                return Err(Sense::invalid_field_in_parameter_list_at(pos as u16, Some(5)));
            }
            if plen != cur.len() - 2 {
                return Err(Sense::invalid_field_in_parameter_list_at(pos as u16 + 1, None));
            }
            // PS (bit 7 of byte 0) is reserved in MODE SELECT and ignored.
            if let Some(i) = (2..cur.len()).find(|&i| p[pos + i] != cur[i]) {
                return Err(Sense::invalid_field_in_parameter_list_at((pos + i) as u16, None));
            }
            pos += 2 + plen;
        }
        Ok(())
    }

    // ------------------------------------------------------------ UNMAP

    /// Parses and checks an UNMAP parameter list (SBC-3 5.28); every
    /// descriptor is checked before any is applied.
    fn parse_unmap(&self, p: &[u8]) -> Result<Vec<(u64, u64)>, Sense> {
        let n = self.check_unmap(p)?;
        Ok((0..n)
            .map(|i| unmap_descriptor(p, i))
            .filter(|&(_, nb)| nb > 0)
            .collect())
    }

    /// Checks an UNMAP parameter list (at least its 8-byte header) and
    /// returns how many block descriptors it has ([`unmap_descriptor`]).
    pub(super) fn check_unmap(&self, p: &[u8]) -> Result<usize, Sense> {
        // Block descriptors: BLOCK DESCRIPTOR DATA LENGTH, limited to what
        // was sent; a trailing partial descriptor is ignored (SBC-3 5.28.2).
        let bd_len = usize::from(be16(&p[2..])).min(p.len() - 8);
        let n = bd_len / 16;
        if n > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::invalid_field_in_parameter_list_at(2, None));
        }
        let max_lbas = self.store.num_blocks().min(u64::from(u32::MAX));
        let mut total = 0u64;
        for i in 0..n {
            let (lba, nb) = unmap_descriptor(p, i);
            self.range(lba, nb)?;
            total += nb;
            // MAXIMUM UNMAP LBA COUNT exceeded → INVALID FIELD IN PARAMETER LIST.
            if total > max_lbas {
                return Err(Sense::invalid_field_in_parameter_list_at(
                    (8 + 16 * i + 8) as u16,
                    None,
                ));
            }
        }
        Ok(n)
    }

    // ------------------------------------------------------------ RSOC

    fn supported(&self, c: &cdb::CmdInfo) -> bool {
        !c.thin_only || self.thin()
    }

    /// REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 6.35).
    fn report_opcodes(&self, rctd: bool, options: u8, opcode: u8, sa: u16) -> Result<Vec<u8>, Sense> {
        // Command timeouts descriptor (SPC-4 6.35.4): no timeouts given.
        let timeouts = [0u8, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        if options == 0 {
            let mut d = vec![0u8; 4];
            for c in cdb::COMMANDS.iter().filter(|c| self.supported(c)) {
                let flags = if rctd { 0x02 } else { 0 } | u8::from(c.sa.is_some());
                let sa = c.sa.unwrap_or(0).to_be_bytes();
                let cl = (c.cdb_len() as u16).to_be_bytes();
                d.extend_from_slice(&[c.opcode, 0, sa[0], sa[1], 0, flags, cl[0], cl[1]]);
                if rctd {
                    d.extend_from_slice(&timeouts);
                }
            }
            let n = (d.len() - 4) as u32;
            d[..4].copy_from_slice(&n.to_be_bytes());
            return Ok(d);
        }
        let has_sa = cdb::has_service_action(opcode);
        // SPC-4 6.35.1 table 250: option 1 for a command with service
        // actions, or option 2 for one without, is INVALID FIELD IN CDB.
        if (options == 1 && has_sa) || (options == 2 && !has_sa) {
            return Err(Sense::invalid_field_in_cdb_at(2, Some(2)));
        }
        let found = if has_sa {
            u8::try_from(sa)
                .ok()
                .filter(|&s| s <= 0x1f)
                .and_then(|s| cdb::lookup(opcode, u16::from(s)))
        } else {
            cdb::lookup(opcode, 0)
        }
        .filter(|c| self.supported(c));
        let mut d = vec![0u8; 4];
        match found {
            Some(c) => {
                d[1] = 0x03; // SUPPORT: supported as in a standard
                d[2..4].copy_from_slice(&(c.cdb_len() as u16).to_be_bytes());
                d.extend_from_slice(c.usage);
            }
            None => d[1] = 0x01, // SUPPORT: not supported
        }
        if rctd {
            d[1] |= 0x80; // CTDP
            d.extend_from_slice(&timeouts);
        }
        Ok(d)
    }
}

/// The (LBA, number of blocks) of block descriptor `i` of an UNMAP
/// parameter list that [`Disk::check_unmap`] accepted.
pub(super) fn unmap_descriptor(p: &[u8], i: usize) -> (u64, u64) {
    let d = &p[8 + 16 * i..24 + 16 * i];
    (be64(d), u64::from(be32(&d[8..])))
}

/// Sense for a failed backstore I/O (SBC-3 4.15: MEDIUM ERROR with the LBA
/// in INFORMATION). A full file system or pool (ENOSPC, EDQUOT) is SPACE
/// ALLOCATION FAILED WRITE PROTECT (SBC-3 4.7.3.6); a read-only one
/// (EROFS, EPERM) WRITE PROTECTED (SBC-3 4.11); storage that could not
/// be reached (a Ceph cluster: timeouts, lost connections, this client
/// fenced by another) NOT READY, LOGICAL UNIT COMMUNICATION TIME-OUT or
/// FAILURE (08h/01h, 08h/00h; SPC-4 D.2); a range the storage no longer
/// has (shrunk meanwhile) LOGICAL BLOCK ADDRESS OUT OF RANGE (SBC-3 4.5).
pub(super) fn io_sense(e: &std::io::Error, write: bool, lba: u64) -> Sense {
    tracing::warn!(
        "backstore {} error at LBA {lba}: {e}",
        if write { "write" } else { "read" }
    );
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) if write => return Sense::space_allocation_failed(),
        Some(libc::EROFS) if write => return Sense::write_protected(),
        Some(libc::ETIMEDOUT) => return Sense::communication_timeout(),
        // ESHUTDOWN is Ceph's EBLOCKLISTED: another client fenced this one.
        Some(libc::ENOTCONN | libc::ESHUTDOWN | libc::ECONNREFUSED | libc::ECONNRESET) => {
            return Sense::communication_failure()
        }
        Some(libc::ERANGE) => return Sense::lba_out_of_range().with_info(lba),
        _ => {}
    }
    if write && e.kind() == std::io::ErrorKind::PermissionDenied {
        return Sense::write_protected();
    }
    let s = if write {
        Sense::medium_error_write()
    } else {
        Sense::medium_error_read()
    };
    s.with_info(lba)
}
