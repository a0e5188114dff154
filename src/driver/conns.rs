//! The control plane's table of accepted connections: each channel's
//! RDMA/CM id, the poller it runs on, its I_T nexus and its device,
//! addressed by CM id handle (events) and by channel key (pollers).

use crate::driver::channel::ChannelKey;
use std::collections::HashMap;

use crate::rdma::{CmId, CmIdHandle};
use crate::scsi::InitiatorPortId;

/// An I_T nexus: initiator and target port identifiers as SRP names them,
/// and the relative target port identifier of the RDMA port the login came
/// through (each RDMA port is a SCSI target port, `docs/alua.md`).
pub(super) type NexusId = (InitiatorPortId, [u8; 16], u16);

/// One accepted connection (its channel runs on a poller).
#[derive(Debug)]
pub(super) struct Conn {
    pub id: CmId,
    pub key: ChannelKey,
    pub poller: usize,
    pub nexus: NexusId,
    pub device: String,
    /// Bytes of the channel's memory (`ChannelMemoryLayout::total`).
    pub memory: u64,
    pub disconnect_sent: bool,
}

impl Conn {
    /// Sends the DREQ (or answers the initiator's) once.
    pub fn send_disconnect(&mut self) {
        if !self.disconnect_sent {
            self.disconnect_sent = true;
            if let Err(e) = self.id.disconnect() {
                tracing::debug!(error = %e, "rdma_disconnect");
            }
        }
    }
}

/// Accepted connections, with the channel keys of each nexus.
#[derive(Debug)]
pub(super) struct Conns {
    by_id: HashMap<CmIdHandle, Conn>,
    by_key: HashMap<ChannelKey, CmIdHandle>,
    by_nexus: HashMap<NexusId, Vec<ChannelKey>>,
    next_key: u64,
    /// Sum of the connections' `memory`.
    memory: u64,
}

impl Conns {
    pub fn new() -> Conns {
        Conns {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            by_nexus: HashMap::new(),
            next_key: 1,
            memory: 0,
        }
    }

    /// A key for a new channel (never reused).
    pub fn new_key(&mut self) -> ChannelKey {
        let key = ChannelKey(self.next_key);
        self.next_key += 1;
        key
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.by_id.values()
    }

    /// The connections on device `name`.
    pub fn on_device<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Conn> + 'a {
        self.by_id.values().filter(move |c| c.device == name)
    }

    pub fn get(&self, h: &CmIdHandle) -> Option<&Conn> {
        self.by_id.get(h)
    }

    pub fn get_mut(&mut self, h: &CmIdHandle) -> Option<&mut Conn> {
        self.by_id.get_mut(h)
    }

    /// The connection of channel `key`.
    pub fn by_key_mut(&mut self, key: ChannelKey) -> Option<&mut Conn> {
        let h = self.by_key.get(&key)?;
        self.by_id.get_mut(h)
    }

    /// Channels of `nexus`.
    pub fn nexus_channels(&self, nexus: &NexusId) -> &[ChannelKey] {
        self.by_nexus.get(nexus).map_or(&[], |v| v.as_slice())
    }

    /// Memory of all accepted channels that are not closed yet.
    /// I_T nexuses with at least one channel (sessions).
    pub fn nexus_count(&self) -> usize {
        self.by_nexus.len()
    }

    pub fn memory(&self) -> u64 {
        self.memory
    }

    pub fn insert(&mut self, c: Conn) {
        self.memory += c.memory;
        self.by_nexus.entry(c.nexus).or_default().push(c.key);
        let handle = c.id.handle();
        self.by_key.insert(c.key, handle);
        self.by_id.insert(handle, c);
    }

    /// Removes channel `key` (closed); dropping the returned connection
    /// destroys its RDMA/CM id.
    pub fn remove(&mut self, key: ChannelKey) -> Option<Conn> {
        let h = self.by_key.remove(&key)?;
        let c = self.by_id.remove(&h)?;
        self.memory = self.memory.saturating_sub(c.memory);
        if let Some(v) = self.by_nexus.get_mut(&c.nexus) {
            v.retain(|&k| k != key);
            if v.is_empty() {
                self.by_nexus.remove(&c.nexus);
            }
        }
        Some(c)
    }
}
