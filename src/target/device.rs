//! Per-device state shared by all channels on one RDMA device: the verbs
//! context, a protection domain and the RAM LUNs registered once.

use std::sync::Arc;

use crate::rdma::{self, AccessFlags, Context, DeviceAttr, DmaBuf, MemoryRegion, ProtectionDomain};

/// One RDMA device in use.
#[derive(Debug)]
pub struct Device {
    name: String,
    ctx: Arc<Context>,
    pd: Arc<ProtectionDomain>,
    attr: DeviceAttr,
    ram: Vec<MemoryRegion>,
}

impl Device {
    /// Opens the device state on `ctx` (the context RDMA/CM uses for the
    /// device) and registers every RAM LUN buffer for RDMA READ landing
    /// (local write) and RDMA WRITE sourcing.
    pub fn new(ctx: Arc<Context>, ram: &[Arc<DmaBuf>]) -> rdma::Result<Device> {
        let attr = ctx.query_device()?;
        let pd = ProtectionDomain::new(&ctx)?;
        let ram = ram
            .iter()
            .map(|b| MemoryRegion::register(&pd, b.clone(), AccessFlags::LOCAL_WRITE))
            .collect::<rdma::Result<Vec<_>>>()?;
        Ok(Device {
            name: ctx.name(),
            ctx,
            pd,
            attr,
            ram,
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

    /// The protection domain every channel on this device uses.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// Device limits.
    pub fn attr(&self) -> &DeviceAttr {
        &self.attr
    }

    /// The memory region of the RAM LUN whose buffer starts at `base`.
    pub fn ram_mr(&self, base: u64) -> Option<&MemoryRegion> {
        self.ram.iter().find(|m| m.addr() == base)
    }
}
