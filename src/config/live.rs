//! The settings of a running srptd and how the admin socket changes them.
//!
//! Every change is made to a copy of the effective [`Settings`] and checked
//! by [`Settings::build`], the same check a config file gets, so an admin
//! call's error names its parameter the way a file's names its line. The
//! caller applies the resulting [`TargetConfig`](crate::scsi::TargetConfig)
//! to the served target and, when that succeeds, [`LiveConfig::commit`]s
//! the copy. A reload reads the file again, lays the start's flags over it
//! again, and reports which settings differ that only a restart applies.

use std::path::{Path, PathBuf};

use super::{err, AclLun, ConfigError, Flags, Loaded, LunSetting, Origin, Setting, Settings};
use crate::wire::parse_hex;

/// One change an admin call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    LunAdd {
        number: u16,
        backstore: String,
        read_only: Option<bool>,
        block_size: Option<u32>,
        serial: Option<String>,
        naa: Option<String>,
        thin: Option<bool>,
    },
    LunRemove {
        number: u16,
    },
    LunReadOnly {
        number: u16,
        read_only: bool,
    },
    AclAdd {
        initiator: String,
        luns: Option<Vec<u16>>,
        read_only: Option<bool>,
        address: Option<String>,
    },
    AclRemove {
        initiator: String,
    },
    /// Lets an ACL's initiator see one more LUN, under its own number or
    /// `mapped_lun`; for a LUN it sees already, changes its number.
    AclMap {
        initiator: String,
        lun: u16,
        mapped_lun: Option<u16>,
    },
    AclUnmap {
        initiator: String,
        lun: u16,
    },
}

/// A checked reload: the new settings, what they build, and the settings
/// that differ but only take effect at the next start.
#[derive(Debug)]
pub struct Reloaded {
    pub settings: Settings,
    pub loaded: Loaded,
    pub restart_needed: Vec<&'static str>,
}

/// The effective settings and where they came from.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub settings: Settings,
    /// The config file (`--config`), which reload reads and save-config
    /// writes by default.
    pub path: Option<PathBuf>,
    /// The flags given at start; they override the file on reload too.
    pub flags: Flags,
}

/// Whether two ACL initiators name the same ACL: `ANY` in any case, or
/// the same port ID however its hex digits are written.
fn same_initiator(a: &str, b: &str) -> bool {
    // `Some(None)`: ANY; `Some(Some(id))`: a port ID; `None`: neither.
    let key = |s: &str| {
        if s.eq_ignore_ascii_case("any") {
            Some(None)
        } else {
            parse_hex::<16>(s).map(Some)
        }
    };
    match (key(a), key(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

impl LiveConfig {
    /// The settings with `c` made, checked.
    pub fn change(&self, c: &Change) -> Result<(Settings, Loaded), ConfigError> {
        let mut s = self.settings.clone();
        let p = Origin::Param;
        match c {
            Change::LunAdd {
                number,
                backstore,
                read_only,
                block_size,
                serial,
                naa,
                thin,
            } => {
                if s.luns.iter().any(|l| l.number.value == *number) {
                    return err(&p("number"), number, "this LUN number is already used");
                }
                s.luns.push(LunSetting {
                    number: Setting::new(*number, p("number")),
                    backstore: Setting::new(backstore.clone(), p("backstore")),
                    read_only: read_only.map(|v| Setting::new(v, p("read_only"))),
                    block_size: block_size.map(|v| Setting::new(v, p("block_size"))),
                    serial: serial.clone().map(|v| Setting::new(v, p("serial"))),
                    naa: naa.clone().map(|v| Setting::new(v, p("naa"))),
                    thin: thin.map(|v| Setting::new(v, p("thin"))),
                });
            }
            Change::LunRemove { number } => {
                let before = s.luns.len();
                s.luns.retain(|l| l.number.value != *number);
                if s.luns.len() == before {
                    return err(&p("number"), number, "no such LUN");
                }
                // A LUN that is gone is no longer in any ACL's list.
                for a in &mut s.acls {
                    if let Some(ls) = &mut a.luns {
                        ls.value.retain(|e| e.lun != *number);
                    }
                }
            }
            Change::LunReadOnly { number, read_only } => {
                let Some(l) = s.luns.iter_mut().find(|l| l.number.value == *number) else {
                    return err(&p("number"), number, "no such LUN");
                };
                l.read_only = Some(Setting::new(*read_only, p("read_only")));
            }
            Change::AclAdd {
                initiator,
                luns,
                read_only,
                address,
            } => {
                s.explicit_access = true;
                if s.acls
                    .iter()
                    .any(|a| same_initiator(&a.initiator.value, initiator))
                {
                    return err(
                        &p("initiator"),
                        format!("{initiator:?}"),
                        "this initiator has an ACL already",
                    );
                }
                s.acls.push(super::AclSetting {
                    initiator: Setting::new(initiator.clone(), p("initiator")),
                    luns: luns
                        .as_ref()
                        .map(|v| Setting::new(v.iter().map(|&n| AclLun::same(n)).collect(), p("luns"))),
                    read_only: read_only.map(|v| Setting::new(v, p("read_only"))),
                    address: address.clone().map(|v| Setting::new(v, p("address"))),
                });
            }
            Change::AclRemove { initiator } => {
                s.explicit_access = true;
                let before = s.acls.len();
                s.acls.retain(|a| !same_initiator(&a.initiator.value, initiator));
                if s.acls.len() == before {
                    return err(
                        &p("initiator"),
                        format!("{initiator:?}"),
                        "no ACL for this initiator",
                    );
                }
            }
            Change::AclMap { initiator, lun, .. } | Change::AclUnmap { initiator, lun } => {
                let mapped_lun = match c {
                    Change::AclMap { mapped_lun, .. } => Some(*mapped_lun),
                    _ => None,
                };
                let all: Vec<u16> = s.luns.iter().map(|l| l.number.value).collect();
                let Some(a) = s
                    .acls
                    .iter_mut()
                    .find(|a| same_initiator(&a.initiator.value, initiator))
                else {
                    return err(
                        &p("initiator"),
                        format!("{initiator:?}"),
                        "no ACL for this initiator",
                    );
                };
                if !all.contains(lun) {
                    return err(&p("lun"), lun, "no such LUN");
                }
                // An ACL without a list sees every LUN: unmapping one
                // turns it into the list of the others.
                let list = a.luns.get_or_insert_with(|| {
                    Setting::new(all.iter().map(|&n| AclLun::same(n)).collect(), p("lun"))
                });
                let has = list.value.iter().position(|e| e.lun == *lun);
                let mut origin = p("lun");
                match (mapped_lun, has) {
                    (Some(None), Some(_)) => return err(&p("lun"), lun, "already mapped for this initiator"),
                    (Some(Some(m)), Some(i)) if list.value[i].mapped_lun == m => {
                        return err(
                            &p("mapped_lun"),
                            m,
                            "already this LUN's number for this initiator",
                        )
                    }
                    (Some(Some(m)), Some(i)) => {
                        list.value[i].mapped_lun = m;
                        origin = p("mapped_lun");
                    }
                    (Some(m), None) => {
                        list.value.push(AclLun {
                            lun: *lun,
                            mapped_lun: m.unwrap_or(*lun),
                        });
                        if m.is_some() {
                            origin = p("mapped_lun");
                        }
                    }
                    (None, None) => return err(&p("lun"), lun, "not mapped for this initiator"),
                    (None, Some(_)) => list.value.retain(|e| e.lun != *lun),
                }
                list.value.sort_unstable();
                list.origin = origin;
            }
        }
        let loaded = s.build()?;
        Ok((s, loaded))
    }

    /// Reads the config file again (with the start's flags over it) and
    /// checks it; nothing is applied.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let Some(path) = &self.path else {
            return err(
                &Origin::Default,
                "",
                "srptd was started without --config: there is no file to reload",
            );
        };
        let settings = super::read(Some(path), &self.flags)?;
        let loaded = settings.build()?;
        let restart_needed = self.settings.restart_needed(&settings);
        Ok(Reloaded {
            settings,
            loaded,
            restart_needed,
        })
    }

    /// Makes `s` the effective settings (after the target took them).
    pub fn commit(&mut self, s: Settings) {
        self.settings = s;
    }

    /// Writes the effective settings as a config file, atomically, to
    /// `path` or else the file srptd was started with.
    pub fn save(&self, path: Option<&Path>) -> Result<PathBuf, ConfigError> {
        let Some(path) = path.or(self.path.as_deref()) else {
            return err(
                &Origin::Param("path"),
                "",
                "srptd was started without --config: say where to write the file",
            );
        };
        if !path.is_absolute() {
            return err(&Origin::Param("path"), path.display(), "must be an absolute path");
        }
        let text = self.settings.to_toml();
        super::save::write_atomically(path, text.as_bytes()).map_err(|e| ConfigError {
            origin: Origin::Param("path"),
            value: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(path.to_owned())
    }
}

impl Settings {
    /// The settings that differ between `self` and `new` and that only a
    /// restart applies (named as the file's keys).
    pub fn restart_needed(&self, new: &Settings) -> Vec<&'static str> {
        let mut out = Vec::new();
        // A setting's value, whatever its origin; `opt`: of an optional one.
        macro_rules! cmp {
            ($($field:ident => $key:literal),* ; opt $($ofield:ident => $okey:literal),* $(,)?) => {
                $(
                    if self.$field.value != new.$field.value {
                        out.push($key);
                    }
                )*
                $(
                    if self.$ofield.as_ref().map(|s| &s.value) != new.$ofield.as_ref().map(|s| &s.value) {
                        out.push($okey);
                    }
                )*
            };
        }
        cmp!(
            name => "target.name",
            port => "target.port",
            devices => "target.devices",
            dm => "target.device_management",
            queue_depth => "limits.queue_depth",
            max_it_iu_len => "limits.max_it_iu_len",
            immediate_data => "limits.immediate_data",
            max_transfer => "limits.max_transfer",
            pool_size => "limits.pool_size",
            poller_cpus => "data_path.poller_cpus",
            io_threads => "data_path.io_threads",
            io_uring => "data_path.io_uring",
            spin_us => "data_path.spin_us",
            poller_nice => "data_path.poller_nice",
            software_read_depth => "data_path.software_read_depth",
            software_one_poller => "data_path.software_one_poller",
            srq => "data_path.srq";
            opt
            id_ext => "target.id_ext",
            ioc_guid => "target.ioc_guid",
            state_dir => "target.state_dir",
            max_channel_memory => "limits.max_channel_memory",
            pollers => "data_path.pollers",
            srq_size => "data_path.srq_size",
            admin_socket => "admin.socket",
            metrics => "admin.metrics",
        );
        let groups = |s: &Settings| -> Vec<(u16, Vec<String>, Option<String>)> {
            s.port_groups
                .iter()
                .map(|g| {
                    (
                        g.id.value,
                        g.ports.value.clone(),
                        g.state.as_ref().map(|v| v.value.clone()),
                    )
                })
                .collect()
        };
        if groups(self) != groups(new) {
            out.push("target_port_group");
        }
        out
    }
}
