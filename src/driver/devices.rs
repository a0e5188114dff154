//! The devices in use and their lifecycle: a device is opened at the first
//! login on it ([`Device`] holds its resources), dropped when it goes away
//! (DEVICE_REMOVAL, or its context replaced without one): its channels are
//! drained and freed, then its PD, MRs and SRQ, and librdmacm is asked to
//! let go of it so that the kernel can finish removing it. Other devices
//! keep serving; a device that comes back is opened again.

use super::channel::ChannelKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::rdma::{self, CmId, CmIdHandle};

use super::control::Control;
use super::device::{Device, SrqSettings};

/// How long the control plane keeps asking librdmacm to let go of a removed
/// device.
const DEVICE_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Devices by name: in use, being removed, being released.
#[derive(Debug, Default)]
pub(super) struct Devices {
    /// Devices in use.
    open: HashMap<String, Arc<Device>>,
    /// Removed devices whose channels are still closing.
    removing: HashMap<String, Arc<Device>>,
    /// Removed and freed devices librdmacm still has to let go of.
    releasing: Vec<(String, Instant)>,
}

impl Devices {
    /// Devices whose state is still held (in use or being removed).
    pub fn held(&self) -> impl Iterator<Item = &Arc<Device>> {
        self.open.values().chain(self.removing.values())
    }

    /// Whether device `name` is being removed (its channels closing).
    pub fn is_removing(&self, name: &str) -> bool {
        self.removing.contains_key(name)
    }

    /// Whether removed devices wait for librdmacm to let go of them.
    pub fn releasing(&self) -> bool {
        !self.releasing.is_empty()
    }
}

impl Control {
    /// The device of a connection's id, opened on first use (with every
    /// poller's completion channel for it). A device whose context changed
    /// without a removal event is dropped and opened again.
    pub(super) fn device(&mut self, id: &CmId) -> rdma::Result<Arc<Device>> {
        let ctx = id.verbs_context()?;
        let name = ctx.name();
        if self
            .devices
            .removing
            .get(&name)
            .is_some_and(|d| d.context().same_context(&ctx))
        {
            return Err(rdma::Error::Invalid("device is being removed"));
        }
        if let Some(d) = self.devices.open.get(&name) {
            if d.context().same_context(&ctx) {
                return Ok(d.clone());
            }
            // Replaced without a removal event reaching us.
            tracing::warn!(device = %name, "RDMA device context changed; dropping the old one");
            self.remove_device(&name);
        }
        let ram: Vec<_> = self.target.luns().into_iter().filter_map(|l| l.dma_buf).collect();
        let srq = self.opts.srq.then_some(SrqSettings {
            slots: self.opts.srq_size,
            max_it_iu_len: self.opts.limits.max_it_iu_len,
            queue_depth: self.opts.limits.queue_depth,
        });
        let d = Arc::new(Device::new(ctx, id.handle(), &ram, srq.as_ref())?);
        // Every poller's completion channel for the device now, not at the
        // first channel that lands on it: the descriptors a device costs are
        // all taken when it is opened, and a login never adds one.
        if let Err(e) = self.pollers.iter().try_for_each(|p| p.comp_channel(&d).map(drop)) {
            for p in &self.pollers {
                p.forget_device(&d);
            }
            return Err(e);
        }
        self.devices.open.insert(name, d.clone());
        Ok(d)
    }

    /// The devices to serve: those asked for, else every one there is now.
    pub(super) fn served_devices(&self) -> Vec<String> {
        if !self.opts.devices.is_empty() {
            return self.opts.devices.clone();
        }
        rdma::devices()
            .map(|v| v.into_iter().map(|d| d.name).collect())
            .unwrap_or_default()
    }

    /// DEVICE_REMOVAL: on a connection, an IB listener or the id a device's
    /// context comes from, the whole device goes: its channels are drained
    /// and freed, then the device state. (The wildcard listener itself gets
    /// no such event: the kernel drops its per-device part by itself and
    /// adds one for devices that appear later.) librdmacm has already
    /// stopped the kernel side of the id.
    pub(super) fn on_device_removal(&mut self, h: CmIdHandle) {
        if self.listeners.is_ip(h) {
            tracing::warn!("device removal on the RDMA/CM listener; listening again");
            self.relisten();
            return;
        }
        let name = if let Some(l) = self.listeners.remove_ib(h) {
            Some(l.device)
        } else if let Some(c) = self.conns.get(&h) {
            Some(c.device.clone())
        } else {
            self.devices
                .open
                .values()
                .find(|d| d.anchor() == h)
                .map(|d| d.name().to_owned())
        };
        match name {
            Some(name) => self.remove_device(&name),
            None => tracing::debug!(?h, "device removal for an id no longer in use"),
        }
    }

    /// The device `name` is going away: stop using it, close its channels
    /// (drain, free); the device state is dropped when the last one closed.
    pub(super) fn remove_device(&mut self, name: &str) {
        let Some(dev) = self.devices.open.remove(name) else {
            return;
        };
        let keys: Vec<ChannelKey> = self.conns.on_device(name).map(|c| c.key).collect();
        tracing::warn!(
            device = name,
            channels = keys.len(),
            "RDMA device removed; closing its channels"
        );
        self.listeners.drop_device(name);
        for k in keys {
            self.disconnect(k);
        }
        self.devices.removing.insert(name.to_owned(), dev);
        self.maybe_release(name);
    }

    /// Frees a removed device once none of its channels is left.
    pub(super) fn maybe_release(&mut self, name: &str) {
        if self.conns.on_device(name).next().is_some() {
            return;
        }
        let Some(dev) = self.devices.removing.remove(name) else {
            return;
        };
        self.summary.leaked_srq_slots += lost_srq_slots(&dev, "when its device went away");
        for p in &self.pollers {
            p.forget_device(&dev);
        }
        drop(dev);
        tracing::info!(device = name, "removed device: channels closed, resources freed");
        // librdmacm keeps its own context of the device open (for the
        // process) until it re-reads its device list and finds the device
        // gone; ask it to (now and on later ticks). It never does so when no
        // device is left at all (rdma-core's sync_devices_list gives up on
        // an empty list), and the kernel's removal then waits for srptd to
        // exit.
        let others = rdma::devices().is_ok_and(|v| v.iter().any(|d| d.name != name));
        if others {
            self.devices
                .releasing
                .push((name.to_owned(), Instant::now() + DEVICE_RELEASE_TIMEOUT));
            let _ = rdma::resync_cm_devices();
            self.schedule_tick();
        } else {
            tracing::warn!(
                device = name,
                "no other RDMA device: librdmacm keeps its context of the removed device open, \
                 so the kernel cannot finish removing it until srptd exits"
            );
        }
    }

    /// On a tick: asks librdmacm again to let go of the removed devices;
    /// stops asking at their timeout. True if it let go of one (its ports
    /// may come back: look for IB ports again).
    pub(super) fn release_devices(&mut self, now: Instant) -> bool {
        if self.devices.releasing.is_empty() {
            return false;
        }
        // Err: librdmacm could not read a device list (none left).
        let known = rdma::resync_cm_devices().ok();
        let mut ib_again = false;
        self.devices.releasing.retain(|(name, until)| {
            if known.as_ref().is_some_and(|k| !k.contains(name)) {
                tracing::info!(device = %name, "librdmacm let go of the removed device");
                ib_again = true;
                false
            } else if now >= *until {
                tracing::warn!(
                    device = %name,
                    "librdmacm still holds the removed device; its removal waits for srptd to exit"
                );
                false
            } else {
                true
            }
        });
        ib_again
    }
}

/// Slots of `dev`'s shared receive queue that are not posted, counted once
/// no channel is left on the device (so none owns a slot): lost, and
/// logged as such.
pub(super) fn lost_srq_slots(dev: &Device, when: &str) -> u64 {
    let Some(srq) = dev.srq() else { return 0 };
    let lost = srq.slots().saturating_sub(srq.posted());
    if lost > 0 {
        tracing::error!(
            device = dev.name(),
            lost,
            "shared receive queue slots not posted {when}"
        );
    }
    u64::from(lost)
}
