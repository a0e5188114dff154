//! Changes to a served target: LUNs added, removed, resized or
//! write-protected and access lists changed while initiators stay logged
//! in, with the unit attentions each change owes them (SPC-4 5.14, SAM-5
//! 5.14): REPORTED LUNS DATA HAS CHANGED to every I_T nexus whose LUN
//! inventory changed, CAPACITY DATA HAS CHANGED to every nexus that sees a
//! resized LUN.
//!
//! A change builds a new [`LunTable`] and swaps it in; commands read the
//! table without locks. A command already running on a removed LUN
//! finishes on it; one planned but not yet run ends in CHECK CONDITION,
//! LOGICAL UNIT NOT SUPPORTED (nothing was acknowledged, so nothing is
//! lost). A removed LUN is flushed after the last command running on it
//! has ended (`drain.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::aptpl::AptplFile;
use super::backstore::{ConfigError, ResizeError};
use super::disk::Disk;
use super::drain::{Closed, InFlight};
use super::lun::{
    fnv1a, naa_from, valid_naa, valid_serial, LunConfig, LunEntry, LunReservations, LunTable, Mapped, Target,
    TargetConfig, NAA_RULE, SERIAL_RULE,
};
use super::sense::Sense;

/// Source of [`LunEntry::uid`]s (0 means "no LUN").
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// What a change did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub added: Vec<u16>,
    pub removed: Vec<u16>,
    /// LUNs whose write protection was turned on or off.
    pub read_only: Vec<u16>,
    /// Whether who sees which LUN (or sees it read-only) changed.
    pub access_changed: bool,
    /// I_T nexuses given REPORTED LUNS DATA HAS CHANGED.
    pub nexuses_notified: usize,
    /// Removed LUNs still running commands when the change stopped waiting
    /// ([`REMOVAL_WAIT`]): each is flushed after its last command ends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flush_pending: Vec<u16>,
    /// Removed LUNs whose flush failed (logged).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flush_failed: Vec<u16>,
}

/// How long a change waits for the commands running on the LUNs it removes
/// before it hands their flush to the last of them.
pub const REMOVAL_WAIT: Duration = Duration::from_secs(10);

impl Applied {
    /// Whether the change changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.read_only.is_empty() && !self.access_changed
    }
}

/// Why a change was refused; the target is as it was.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("LUN {lun}: its {what} cannot change while it is served (remove the LUN and add it again)")]
    NotLive { lun: u16, what: &'static str },
    #[error("LUN {lun}: {source}")]
    Backstore {
        lun: u16,
        #[source]
        source: ResizeError,
    },
    #[error("LUN {0} does not exist")]
    NoSuchLun(u16),
}

/// What of a LUN's configuration cannot change live, if anything differs.
fn fixed_difference(old: &LunConfig, new: &LunConfig) -> Option<&'static str> {
    if old.backstore.kind != new.backstore.kind {
        Some("backstore")
    } else if old.backstore.block_size != new.backstore.block_size {
        Some("block size")
    } else if old.serial != new.serial {
        Some("serial number")
    } else if old.naa != new.naa {
        Some("NAA identifier")
    } else if old.thin != new.thin {
        Some("provisioning (thin)")
    } else {
        None
    }
}

impl Target {
    /// Opens `l`'s backstore and reservation state into a table entry.
    /// `table` holds the LUNs it must not collide with; `at_start`: its
    /// memory will be registered with every RDMA device (zero-copy).
    pub(super) fn open_lun(
        &self,
        field: &str,
        l: &LunConfig,
        table: &LunTable,
        at_start: bool,
    ) -> Result<Mapped, ConfigError> {
        if l.lun > super::MAX_LUN {
            return Err(ConfigError::LunTooLarge {
                field: format!("{field}.lun"),
                lun: l.lun,
            });
        }
        if let Some(s) = &l.serial {
            if !valid_serial(s) {
                return Err(ConfigError::Invalid {
                    field: format!("{field}.serial"),
                    reason: SERIAL_RULE,
                });
            }
        }
        let store = l.backstore.open(&format!("{field}.backstore"))?;
        let serial = l.serial.clone().unwrap_or_else(|| {
            let seed = store
                .identity()
                .unwrap_or_else(|| format!("ram:{}/{}", self.name, l.lun));
            format!("{:016x}", fnv1a(0xcbf2_9ce4_8422_2325, seed.as_bytes()))
        });
        let naa = match l.naa {
            Some(n) if valid_naa(&n) => n,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    field: format!("{field}.naa"),
                    reason: NAA_RULE,
                })
            }
            None => naa_from(self.naa_company_id, &serial),
        };
        // The designator names the logical unit (SPC-4 7.8.6): multipath
        // takes two LUNs with one NAA for paths to the same device, and the
        // saved reservations are found by it.
        if table.luns.values().any(|m| m.entry.disk.naa() == naa) {
            return Err(ConfigError::Invalid {
                field: format!("{field}.serial"),
                reason:
                    "two LUNs would have the same serial number or NAA identifier (one device to multipath)",
            });
        }
        let file = self.state_dir.as_deref().map(|d| AptplFile::new(d, naa));
        let saved = match &file {
            Some(f) => f.load().map_err(|source| ConfigError::ReservationState {
                field: field.to_owned(),
                source,
            })?,
            None => None,
        };
        if let (Some(r), Some(f)) = (&saved, &file) {
            tracing::info!(
                lun = l.lun,
                file = %f.path().display(),
                registrations = r.registrations.len(),
                reservation = ?r.reservation.map(|x| x.rtype.0),
                "persistent reservations restored (APTPL)"
            );
        }
        let disk = Disk::new(store, serial, naa, self.max_transfer_bytes).with_thin_provisioning(l.thin);
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        if let Some(me) = self.me.get() {
            disk.store().watch_size(size_hook(me.clone(), uid));
        }
        Ok(Mapped {
            entry: Arc::new(LunEntry {
                disk,
                pr: LunReservations::new(saved.unwrap_or_default(), file),
                uid,
                zero_copy: at_start,
                in_flight: InFlight::default(),
            }),
            access: l.access.clone(),
            read_only_for: l.read_only_for.clone(),
            config: l.clone(),
        })
    }

    /// Makes the LUN table and access lists those of `cfg` (its LUNs,
    /// their read-only flags and access, the target's access list; the
    /// name and limits are not live and are ignored). LUNs not in `cfg`
    /// are removed, new ones opened; a LUN whose backstore, block size or
    /// serial differs is refused. All or nothing.
    pub fn apply(&self, cfg: &TargetConfig) -> Result<Applied, ChangeError> {
        let _one_at_a_time = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.table.load_full();
        let mut next = LunTable::new(cfg.access.clone(), cfg.peers.clone());
        let mut applied = Applied::default();
        // Kept LUNs first, so new ones are checked against all of them.
        for (i, l) in cfg.luns.iter().enumerate() {
            let Some(m) = old.luns.get(&l.lun) else { continue };
            if next.luns.contains_key(&l.lun) {
                return Err(ConfigError::DuplicateLun {
                    field: format!("luns[{i}].lun"),
                    lun: l.lun,
                }
                .into());
            }
            if let Some(what) = fixed_difference(&m.config, l) {
                return Err(ChangeError::NotLive { lun: l.lun, what });
            }
            let mut kept = m.clone();
            kept.access = l.access.clone();
            kept.read_only_for = l.read_only_for.clone();
            kept.config = l.clone();
            next.luns.insert(l.lun, kept);
        }
        for (i, l) in cfg.luns.iter().enumerate() {
            if old.luns.contains_key(&l.lun) {
                continue;
            }
            if next.luns.contains_key(&l.lun) {
                return Err(ConfigError::DuplicateLun {
                    field: format!("luns[{i}].lun"),
                    lun: l.lun,
                }
                .into());
            }
            let m = self.open_lun(&format!("luns[{i}]"), l, &next, false)?;
            next.luns.insert(l.lun, m);
            applied.added.push(l.lun);
        }
        applied.removed = old
            .luns
            .keys()
            .filter(|n| !next.luns.contains_key(n))
            .copied()
            .collect();
        // Write protection, undone if a later LUN refuses.
        let mut flipped: Vec<&Mapped> = Vec::new();
        for m in next
            .luns
            .values()
            .filter(|m| old.luns.contains_key(&m.config.lun))
        {
            let store = m.entry.disk.store();
            let want = m.config.backstore.read_only;
            if store.read_only() == want {
                continue;
            }
            if let Err(source) = store.set_read_only(want) {
                for f in &flipped {
                    let _ = f.entry.disk.store().set_read_only(!f.config.backstore.read_only);
                }
                return Err(ChangeError::Backstore {
                    lun: m.config.lun,
                    source,
                });
            }
            flipped.push(m);
            applied.read_only.push(m.config.lun);
        }
        applied.access_changed = old.access != next.access
            || old.peers != next.peers
            || next.luns.iter().any(|(n, m)| {
                old.luns.get(n).is_some_and(|o| {
                    o.access != m.access
                        || o.read_only_for != m.read_only_for
                        || o.config.mapped_as != m.config.mapped_as
                })
            });
        next.index();
        let next = Arc::new(next);
        self.table.store(Arc::clone(&next));
        // The inventory a nexus sees is its LUN numbers and what they
        // address: a LUN added, removed, or mapped under another number
        // changes it (SPC-4 6.33, SAM-5 5.14).
        for n in self.live_nexuses() {
            let (before, after) = (old.lun_map(n.initiator()), next.lun_map(n.initiator()));
            for l in &applied.removed {
                n.clear_ua(*l);
            }
            if before != after {
                for &(_, l) in &after {
                    n.add_ua(l, Sense::reported_luns_changed());
                }
                applied.nexuses_notified += 1;
            }
        }
        // A removed LUN's commands already running finish on it (those only
        // planned are refused when they would run); its cache is flushed
        // after the last has ended, so no write acknowledged GOOD is lost.
        // Other LUNs never wait: only this change does, up to the bound.
        let deadline = Instant::now() + self.drain_bound;
        for &l in &applied.removed {
            let m = &old.luns[&l];
            let store = Arc::clone(m.entry.disk.store());
            let wait = deadline.saturating_duration_since(Instant::now());
            match m.entry.in_flight.close(wait, Box::new(move || store.flush())) {
                Closed::Flushed(Ok(())) => {}
                Closed::Flushed(Err(e)) => {
                    tracing::error!(lun = l, error = %e, "flushing a removed LUN failed");
                    applied.flush_failed.push(l);
                }
                Closed::Pending { running } => {
                    tracing::warn!(
                        lun = l,
                        running,
                        "a removed LUN still runs commands: it is flushed after the last"
                    );
                    applied.flush_pending.push(l);
                }
            }
        }
        Ok(applied)
    }

    /// Resizes LUN `lun` (`bytes`: the new size; for a block device, the
    /// size it has now) and raises CAPACITY DATA HAS CHANGED (2Ah/09h,
    /// SBC-3 4.6) on every nexus that sees it. Returns the new number of
    /// logical blocks.
    pub fn resize(&self, lun: u16, bytes: Option<u64>) -> Result<u64, ChangeError> {
        let _one_at_a_time = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.table.load();
        let m = t.luns.get(&lun).ok_or(ChangeError::NoSuchLun(lun))?;
        let blocks = m
            .entry
            .disk
            .store()
            .resize(bytes)
            .map_err(|source| ChangeError::Backstore { lun, source })?;
        self.unit_attention_all(lun, Sense::capacity_changed());
        Ok(blocks)
    }
}

#[cfg(test)]
impl Target {
    /// Puts LUN `lun` on storage `store` (a test double) into the table,
    /// visible to everyone allowed, configured as a RAM LUN.
    pub(super) fn insert_store(&self, lun: u16, store: Arc<dyn super::Backstore>) {
        let serial = format!("store{lun}");
        let naa = naa_from(self.naa_company_id, &serial);
        let mut table = LunTable::clone(&self.table.load());
        let config = LunConfig::new(lun, super::tests::ram(1 << 20, store.block_size()));
        let entry = LunEntry {
            disk: Disk::new(store, serial, naa, self.max_transfer_bytes),
            pr: LunReservations::new(Default::default(), None),
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            zero_copy: false,
            in_flight: InFlight::default(),
        };
        table.luns.insert(
            lun,
            Mapped {
                entry: Arc::new(entry),
                access: None,
                read_only_for: Default::default(),
                config,
            },
        );
        table.index();
        self.table.store(Arc::new(table));
    }
}

/// What a backstore calls when its size may have changed outside srptd.
pub(super) fn size_hook(target: Weak<Target>, uid: u64) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        if let Some(t) = target.upgrade() {
            t.follow_size(uid);
        }
    })
}

impl Target {
    /// The target in its `Arc`, its backstores' size-change hooks set
    /// (LUNs opened later get theirs in `open_lun`).
    pub(super) fn watching_sizes(self) -> Arc<Target> {
        let target = Arc::new(self);
        let _ = target.me.set(Arc::downgrade(&target));
        for m in target.table.load().luns.values() {
            let hook = size_hook(Arc::downgrade(&target), m.entry.uid);
            m.entry.disk.store().watch_size(hook);
        }
        target
    }

    /// Follows a size change made outside srptd (an RBD image resized by
    /// another client): reads the size of the LUN whose entry is `uid`
    /// again and, if it changed, raises CAPACITY DATA HAS CHANGED
    /// (2Ah/09h, SBC-3 4.6) as [`resize`](Self::resize) does.
    pub fn follow_size(&self, uid: u64) {
        let _one_at_a_time = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.table.load();
        let Some((&lun, m)) = t.luns.iter().find(|(_, m)| m.entry.uid == uid) else {
            return;
        };
        let store = m.entry.disk.store();
        let before = store.num_blocks();
        match store.resize(None) {
            Ok(after) if after != before => {
                tracing::info!(lun, blocks = after, was = before, "the backstore's size changed");
                self.unit_attention_all(lun, Sense::capacity_changed());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(lun, error = %e, "reading the backstore's size again failed"),
        }
    }
}
