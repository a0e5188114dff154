//! The devices in use and their lifecycle: a device is opened at the first
//! login on it ([`Device`] holds its resources), dropped when it goes away
//! (DEVICE_REMOVAL, or its context replaced without one): its channels are
//! drained and freed, then its PD, MRs and SRQ, and finally librdmacm's
//! context of it is released ([`rdma::RetiredContext`]) so that the kernel
//! can finish removing it, even when it was the last device. Other devices
//! keep serving; a device that comes back is opened again.

use super::channel::ChannelKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::rdma::{self, CmId, CmIdHandle, Release, RetiredContext};

use super::control::Control;
use super::device::{Device, SrqSettings};

/// How long the control plane waits for the last handles of a removed
/// device's context to go (the pollers drop theirs when they wake) before
/// it leaves the context to librdmacm.
const DEVICE_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Devices by name: in use, being removed, being released.
#[derive(Debug, Default)]
pub(super) struct Devices {
    /// Devices in use.
    open: HashMap<String, Arc<Device>>,
    /// Removed devices whose channels are still closing.
    removing: HashMap<String, Arc<Device>>,
    /// librdmacm's contexts of removed and freed devices, to be released.
    releasing: Vec<(RetiredContext, Instant)>,
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

    /// Whether contexts of removed devices wait to be released.
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
        // Taken while the device state still holds the context open.
        let retired = dev.context().retire();
        for p in &self.pollers {
            p.forget_device(&dev);
        }
        drop(dev);
        tracing::info!(device = name, "removed device: channels closed, resources freed");
        match retired {
            Ok(r) => {
                let now = Instant::now();
                self.devices.releasing.push((r, now + DEVICE_RELEASE_TIMEOUT));
                if self.release_devices(now) {
                    self.listeners.rescan_from(now);
                }
                self.schedule_tick();
            }
            Err(e) => tracing::warn!(
                device = name,
                error = %e,
                "cannot release librdmacm's context of the removed device: the kernel's removal waits for srptd to exit"
            ),
        }
    }

    /// Releases librdmacm's contexts of removed devices whose last handles
    /// are gone (now and on later ticks); gives up on one at its timeout.
    /// True if one was released (its ports may come back: look for IB ports
    /// again).
    pub(super) fn release_devices(&mut self, now: Instant) -> bool {
        let mut released = false;
        self.devices.releasing.retain_mut(|(r, until)| {
            let device = r.device().to_owned();
            match r.try_release() {
                Release::Busy if now < *until => return true,
                Release::Busy => tracing::warn!(
                    device,
                    "the removed device's context is still in use after {DEVICE_RELEASE_TIMEOUT:?}; \
                     the kernel's removal waits for srptd to exit"
                ),
                Release::Closed => {
                    released = true;
                    tracing::info!(device, "librdmacm closed its context of the removed device");
                }
                Release::Revoked => {
                    released = true;
                    tracing::info!(
                        device,
                        "released librdmacm's context of the removed device (its descriptors now \
                         refer to /dev/null): the kernel can finish removing it"
                    );
                }
                Release::Kept(e) => tracing::warn!(
                    device,
                    error = %e,
                    "cannot release librdmacm's context of the removed device: the kernel's removal \
                     waits for srptd to exit"
                ),
            }
            false
        });
        released
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
