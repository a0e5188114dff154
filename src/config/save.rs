//! save-config: the effective settings written back as a config file that
//! [`Settings::from_toml`] reads to the same configuration. Settings still
//! at their built-in default are left out, so the defaults of a later
//! version apply to them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use toml::{Table, Value};

use super::{AclLun, Origin, Setting, Settings};

/// Sets `key` in `t` when the setting is not a built-in default.
fn put<T: Clone + Into<Value>>(t: &mut Table, key: &str, s: &Setting<T>) {
    if s.origin != Origin::Default {
        t.insert(key.into(), s.value.clone().into());
    }
}

fn put_opt<T: Clone + Into<Value>>(t: &mut Table, key: &str, s: &Option<Setting<T>>) {
    if let Some(s) = s {
        t.insert(key.into(), s.value.clone().into());
    }
}

fn put_int<T: Copy + Into<i64>>(t: &mut Table, key: &str, s: &Setting<T>) {
    if s.origin != Origin::Default {
        t.insert(key.into(), Value::Integer(s.value.into()));
    }
}

fn put_int_opt<T: Copy + Into<i64>>(t: &mut Table, key: &str, s: &Option<Setting<T>>) {
    if let Some(s) = s {
        t.insert(key.into(), Value::Integer(s.value.into()));
    }
}

/// An ACL's LUN list: a LUN under its own number as the number, a mapped
/// one as `{ lun = 3, mapped_lun = 0 }`.
fn acl_luns(v: &[AclLun]) -> Value {
    let item = |e: &AclLun| {
        if e.lun == e.mapped_lun {
            return Value::Integer(e.lun.into());
        }
        let mut t = Table::new();
        t.insert("lun".into(), Value::Integer(e.lun.into()));
        t.insert("mapped_lun".into(), Value::Integer(e.mapped_lun.into()));
        Value::Table(t)
    };
    Value::Array(v.iter().map(item).collect())
}

impl Settings {
    /// The settings as the text of a config file.
    pub fn to_toml(&self) -> String {
        let mut target = Table::new();
        put(&mut target, "name", &self.name);
        put_opt(&mut target, "id_ext", &self.id_ext);
        put_opt(&mut target, "ioc_guid", &self.ioc_guid);
        put_int(&mut target, "port", &self.port);
        put(&mut target, "devices", &self.devices);
        put(&mut target, "device_management", &self.dm);
        put_opt(&mut target, "state_dir", &self.state_dir);
        let mut limits = Table::new();
        put_int(&mut limits, "queue_depth", &self.queue_depth);
        put_int(&mut limits, "max_it_iu_len", &self.max_it_iu_len);
        put(&mut limits, "immediate_data", &self.immediate_data);
        put(&mut limits, "max_transfer", &self.max_transfer);
        put(&mut limits, "pool_size", &self.pool_size);
        put_opt(&mut limits, "max_channel_memory", &self.max_channel_memory);
        let mut data_path = Table::new();
        put_int_opt(&mut data_path, "pollers", &self.pollers);
        put(&mut data_path, "poller_cpus", &self.poller_cpus);
        put_int(&mut data_path, "io_threads", &self.io_threads);
        put(&mut data_path, "io_uring", &self.io_uring);
        if self.spin_us.origin != Origin::Default {
            data_path.insert(
                "spin_us".into(),
                Value::Integer(self.spin_us.value.min(i64::MAX as u64) as i64),
            );
        }
        put_int(&mut data_path, "poller_nice", &self.poller_nice);
        put_int(&mut data_path, "software_read_depth", &self.software_read_depth);
        put(&mut data_path, "software_one_poller", &self.software_one_poller);
        put(&mut data_path, "srq", &self.srq);
        put_int_opt(&mut data_path, "srq_size", &self.srq_size);
        let mut admin = Table::new();
        put_opt(&mut admin, "socket", &self.admin_socket);

        let mut doc = Table::new();
        for (name, t) in [
            ("target", target),
            ("limits", limits),
            ("data_path", data_path),
            ("admin", admin),
        ] {
            if !t.is_empty() {
                doc.insert(name.into(), Value::Table(t));
            }
        }
        let luns: Vec<Value> = self
            .luns
            .iter()
            .map(|l| {
                let mut t = Table::new();
                t.insert("number".into(), Value::Integer(l.number.value.into()));
                t.insert("backstore".into(), l.backstore.value.clone().into());
                put_opt(&mut t, "read_only", &l.read_only);
                put_int_opt(&mut t, "block_size", &l.block_size);
                put_opt(&mut t, "serial", &l.serial);
                put_opt(&mut t, "naa", &l.naa);
                put_opt(&mut t, "thin", &l.thin);
                Value::Table(t)
            })
            .collect();
        if !luns.is_empty() {
            doc.insert("lun".into(), Value::Array(luns));
        }
        let groups: Vec<Value> = self
            .port_groups
            .iter()
            .map(|g| {
                let mut t = Table::new();
                put_int(&mut t, "id", &g.id);
                let ports = g.ports.value.iter().map(|p| Value::String(p.clone())).collect();
                t.insert("ports".into(), Value::Array(ports));
                put_opt(&mut t, "state", &g.state);
                Value::Table(t)
            })
            .collect();
        if !groups.is_empty() {
            doc.insert("target_port_group".into(), Value::Array(groups));
        }
        let mut body = toml::to_string(&doc).unwrap_or_default();
        // Written by hand so that a LUN list stays one inline array (a list
        // of only mapped LUNs would otherwise become `[[acl.luns]]` tables).
        for a in &self.acls {
            let mut kv: Vec<(&str, Value)> = vec![("initiator", a.initiator.value.clone().into())];
            if let Some(l) = &a.luns {
                kv.push(("luns", acl_luns(&l.value)));
            }
            if let Some(r) = &a.read_only {
                kv.push(("read_only", r.value.into()));
            }
            if let Some(ad) = &a.address {
                kv.push(("address", ad.value.clone().into()));
            }
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str("[[acl]]\n");
            for (k, v) in kv {
                body.push_str(&format!("{k} = {v}\n"));
            }
        }
        format!("# srptd configuration, written by srptd (save_config). See docs/configuration.md.\n\n{body}")
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: a temporary file beside it, fsync, rename over, fsync
/// of the directory. Keeps the old file's permissions (new files: 0600).
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
