//! The admin socket's server: a Unix stream socket (mode 0600, in a 0700
//! directory srptd creates), one JSON-RPC request per line
//! ([`crate::admin::rpc`]). Connections are served on the control runtime;
//! each request goes to the control loop ([`AdminRequest`]), which answers
//! from its own state and, for per-channel figures, asks the pollers for a
//! snapshot without waiting for them itself.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::admin::rpc::{self, code, Call, RpcError};
use crate::proto::{ChannelStats, LunStats};
use crate::wire::hex;

use super::channel::ChannelKey;
use super::control::Control;
use super::poller::{ChannelSnapshot, PollerMsg, PollerSnapshot};

/// Where the admin socket is by default.
pub const DEFAULT_SOCKET: &str = "/run/srptd/srptd.sock";

/// The admin socket to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSocket {
    pub path: PathBuf,
    /// Given by the user: failing to open it stops srptd. (The default
    /// only warns: e.g. a second srptd on the same host.)
    pub explicit: bool,
}

impl Default for AdminSocket {
    fn default() -> Self {
        AdminSocket {
            path: DEFAULT_SOCKET.into(),
            explicit: false,
        }
    }
}

/// A request handed to the control loop, with where its answer goes.
#[derive(Debug)]
pub(super) struct AdminRequest {
    pub call: Call,
    pub reply: oneshot::Sender<Result<Value, (i64, String)>>,
}

/// Opens the socket: creates its directory (0700) if missing, replaces a
/// stale socket file (nobody answers on it), refuses one another process
/// serves, and makes the socket 0600.
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process (another srptd?) answers on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Accepts connections until the runtime stops.
pub(super) async fn serve(listener: UnixListener, path: PathBuf, to_control: mpsc::Sender<AdminRequest>) {
    let owner = std::fs::metadata(&path).map(|m| m.uid()).unwrap_or(0);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, owner, to_control.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether the peer of a connection (`peer_uid`: its user, from its
/// credentials) may administer srptd: root, or the user srptd runs as (who
/// owns the socket). The socket's mode (0600, in a 0700 directory) already
/// keeps others from connecting (EACCES); this answers them -32001 should
/// an administrator open the socket up (a group, a chmod).
fn may_administer(peer_uid: Option<u32>, owner: u32) -> bool {
    peer_uid.is_some_and(|u| u == 0 || u == owner)
}

/// Serves one connection: request lines in, response lines out.
async fn connection(mut stream: UnixStream, owner: u32, to_control: mpsc::Sender<AdminRequest>) {
    let allowed = may_administer(stream.peer_cred().ok().map(|c| c.uid()), owner);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let line = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line: Vec<u8> = buf.drain(..=i).collect();
                line[..i].to_vec()
            }
            None => {
                if buf.len() > rpc::MAX_REQUEST_LEN {
                    let e = RpcError::new(
                        Value::Null,
                        code::INVALID_REQUEST,
                        format!("invalid request: longer than {} bytes", rpc::MAX_REQUEST_LEN),
                    );
                    let _ = write_line(&mut stream, &e.to_line()).await;
                    return;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let answer = answer(&line, allowed, &to_control).await;
        if let Some(a) = answer {
            if write_line(&mut stream, &a).await.is_err() {
                return;
            }
        }
    }
}

/// The response line for one request line (`None` for a notification).
async fn answer(line: &[u8], allowed: bool, to_control: &mpsc::Sender<AdminRequest>) -> Option<String> {
    let req = match rpc::parse_request(line) {
        Ok(r) => r,
        Err(e) => return Some(e.to_line()),
    };
    let id = req.id.clone().unwrap_or(Value::Null);
    if !allowed {
        let e = RpcError::new(
            id,
            code::PERMISSION_DENIED,
            "permission denied: only root or srptd's user may administer it",
        );
        return req.id.is_some().then(|| e.to_line());
    }
    tracing::info!(call = ?req.call, "admin request");
    let (tx, rx) = oneshot::channel();
    let result = match to_control
        .send(AdminRequest {
            call: req.call,
            reply: tx,
        })
        .await
    {
        Ok(()) => rx
            .await
            .unwrap_or(Err((code::SHUTTING_DOWN, "srptd is shutting down".into()))),
        Err(_) => Err((code::SHUTTING_DOWN, "srptd is shutting down".into())),
    };
    req.id.as_ref()?;
    Some(match result {
        Ok(v) => rpc::result_line(&id, v),
        Err((c, m)) => RpcError::new(id, c, m).to_line(),
    })
}

async fn write_line(stream: &mut UnixStream, line: &str) -> io::Result<()> {
    stream.write_all(line.as_bytes()).await?;
    stream.write_all(b"\n").await
}

// ------------------------------------------------------------ the answers

/// A session (I_T nexus) before the pollers' figures: initiator and target
/// port IDs (hex) and each channel's key and connection facts.
pub(super) struct SessionRows {
    pub initiator: String,
    pub target_port: String,
    pub relative_port: u16,
    pub channels: Vec<(ChannelKey, Value)>,
}

pub(super) fn stats_json(s: &ChannelStats) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

impl Control {
    /// Carries out an admin call. Calls that need the pollers' figures
    /// finish in a task of their own, so that the control loop never waits.
    pub(super) fn on_admin(&mut self, r: AdminRequest) {
        match r.call {
            Call::Status => {
                let _ = r.reply.send(Ok(self.status_json()));
            }
            Call::Luns => {
                let _ = r.reply.send(Ok(self.luns_json()));
            }
            Call::Sessions => {
                let sessions = self.sessions_skeleton();
                let snaps = self.snapshots();
                tokio::spawn(async move {
                    let g = collect(snaps).await;
                    let _ = r.reply.send(Ok(fill_sessions(sessions, &g.channels)));
                });
            }
            Call::Stats => {
                let (logins, rejects) = (self.summary.logins, self.summary.rejects);
                let sessions = self.sessions_skeleton();
                let snaps = self.snapshots();
                tokio::spawn(async move {
                    let g = collect(snaps).await;
                    let _ = r
                        .reply
                        .send(Ok(super::metrics::stats_result(logins, rejects, sessions, &g)));
                });
            }
            call @ (Call::Change(_) | Call::LunResize { .. } | Call::SaveConfig { .. } | Call::Reload) => {
                self.on_change(call, r.reply);
            }
            Call::Alua => {
                let _ = r.reply.send(Ok(json!({ "groups": self.target.alua().groups() })));
            }
            Call::AluaSetState { group, state } => {
                let a = self.target.set_alua_state(group, state);
                if let Ok(c) = &a {
                    tracing::info!(group, %state, changed = c.changed, nexuses_notified = c.nexuses_notified, "admin: ALUA state set");
                }
                let a = a.map_err(|e| (code::NOT_FOUND, e.to_string()));
                let _ = r
                    .reply
                    .send(a.map(|c| serde_json::to_value(c).unwrap_or(Value::Null)));
            }
            Call::SessionLogout { initiator } => {
                if self.shutting_down() {
                    let _ = r
                        .reply
                        .send(Err((code::SHUTTING_DOWN, "srptd is shutting down".into())));
                    return;
                }
                let keys: Vec<(ChannelKey, usize)> = self
                    .conns
                    .iter()
                    .filter(|c| c.nexus.0 == initiator)
                    .map(|c| (c.key, c.poller))
                    .collect();
                if keys.is_empty() {
                    let _ = r.reply.send(Err((
                        code::NOT_FOUND,
                        format!("no session of initiator {}", hex(&initiator)),
                    )));
                    return;
                }
                tracing::info!(initiator = %hex(&initiator), channels = keys.len(), "admin: logging the session out");
                for (k, p) in &keys {
                    self.pollers[*p].send(PollerMsg::Logout(*k));
                }
                let _ = r.reply.send(Ok(json!({ "channels": keys.len() })));
            }
        }
    }

    fn status_json(&self) -> Value {
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "id_ext": format!("{:016x}", self.port_id.id_ext),
            "ioc_guid": format!("{:016x}", self.port_id.ioc_guid),
            "port": self.opts.port,
            "devices": self.opts.devices,
            "luns": self.target.luns().len(),
            "sessions": self.conns.nexus_count(),
            "channels": self.conns.len(),
            "channel_memory": self.conns.memory(),
            "channel_memory_budget": self.opts.channel_memory,
            "buffer_memory": crate::mem::mapped_bytes(),
            "heap_in_use": crate::os::heap_in_use(),
            "logins": self.summary.logins,
            "rejects": self.summary.rejects,
            "shutting_down": self.shutting_down(),
        })
    }

    fn luns_json(&self) -> Value {
        let luns: Vec<Value> = self
            .target
            .luns()
            .iter()
            .map(|l| {
                json!({
                    "lun": l.lun,
                    "block_size": l.block_size,
                    "blocks": l.num_blocks,
                    "bytes": l.num_blocks * u64::from(l.block_size),
                    "read_only": l.read_only,
                    "serial": l.serial,
                    "naa": hex(&l.naa),
                    "backstore": l.backstore,
                    "zero_copy": l.dma_buf.is_some(),
                    "read_only_for": l.read_only_for.iter().map(|i| hex(i)).collect::<Vec<_>>(),
                    "mapped_as": l
                        .mapped_as
                        .iter()
                        .map(|(i, n)| (hex(i), json!(n)))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        Value::Array(luns)
    }

    /// Sessions (I_T nexuses) and their channels from the connection
    /// table; per-channel figures are added from the pollers' snapshots.
    fn sessions_skeleton(&self) -> Vec<SessionRows> {
        let mut by_nexus: BTreeMap<(String, String, u16), Vec<(ChannelKey, Value)>> = BTreeMap::new();
        for c in self.conns.iter() {
            let ch = json!({
                "key": c.key.0,
                "device": c.device,
                "poller": c.poller,
                "peer": c.id.peer_addr().map(|a| a.to_string()),
                "memory": c.memory,
            });
            by_nexus
                .entry((hex(&c.nexus.0), hex(&c.nexus.1), c.nexus.2))
                .or_default()
                .push((c.key, ch));
        }
        by_nexus
            .into_iter()
            .map(
                |((initiator, target_port, relative_port), channels)| SessionRows {
                    initiator,
                    target_port,
                    relative_port,
                    channels,
                },
            )
            .collect()
    }

    /// Asks every poller for a snapshot of its channels.
    fn snapshots(&self) -> Vec<oneshot::Receiver<PollerSnapshot>> {
        self.pollers
            .iter()
            .map(|p| {
                let (tx, rx) = oneshot::channel();
                p.send(PollerMsg::Snapshot(tx));
                rx
            })
            .collect()
    }
}

/// The pollers' snapshots together.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// By channel.
    pub channels: BTreeMap<ChannelKey, ChannelSnapshot>,
    /// Channels that have closed, summed.
    pub closed: ChannelStats,
    pub closed_luns: LunStats,
}

/// The pollers' snapshots (a poller that stopped answers none).
async fn collect(rxs: Vec<oneshot::Receiver<PollerSnapshot>>) -> Gathered {
    let mut all = Gathered::default();
    for rx in rxs {
        if let Ok(p) = rx.await {
            all.channels.extend(p.channels.into_iter().map(|s| (s.key, s)));
            all.closed += &p.closed;
            all.closed_luns.merge(&p.closed_luns);
        }
    }
    all
}

fn fill_sessions(sessions: Vec<SessionRows>, snaps: &BTreeMap<ChannelKey, ChannelSnapshot>) -> Value {
    let out: Vec<Value> = sessions
        .into_iter()
        .map(
            |SessionRows {
                 initiator,
                 target_port,
                 relative_port,
                 channels: chs,
             }| {
                let mut total = ChannelStats::default();
                let mut in_flight = 0;
                let channels: Vec<Value> = chs
                    .into_iter()
                    .map(|(key, mut ch)| {
                        if let (Some(s), Value::Object(o)) = (snaps.get(&key), &mut ch) {
                            total += &s.stats;
                            in_flight += s.in_flight;
                            o.insert("in_flight".into(), s.in_flight.into());
                            o.insert("credits_granted".into(), s.credits_granted.into());
                            o.insert("credits_in_use".into(), s.credits_in_use.into());
                            o.insert("stats".into(), stats_json(&s.stats));
                        }
                        ch
                    })
                    .collect();
                json!({
                    "initiator": initiator,
                    "target_port": target_port,
                    "relative_port": relative_port,
                    "channels": channels,
                    "in_flight": in_flight,
                    "stats": stats_json(&total),
                })
            },
        )
        .collect();
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_srptd_s_user_may_administer() {
        assert!(may_administer(Some(0), 1000));
        assert!(may_administer(Some(1000), 1000));
        assert!(!may_administer(Some(65534), 1000));
        assert!(!may_administer(Some(65534), 0));
        assert!(!may_administer(None, 0), "no credentials: refused");
    }

    #[test]
    fn others_get_permission_denied_and_reach_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let line = br#"{"jsonrpc":"2.0","method":"lun_remove","params":{"number":0},"id":7}"#;
        let a = rt.block_on(answer(line, false, &tx)).unwrap();
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], code::PERMISSION_DENIED);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permission denied"));
        assert!(rx.try_recv().is_err(), "the control loop saw nothing");
        // A notification (no id) gets no answer either way.
        let note = br#"{"jsonrpc":"2.0","method":"status"}"#;
        assert_eq!(rt.block_on(answer(note, false, &tx)), None);
        // A request it cannot parse is answered as such first.
        let a = rt.block_on(answer(b"{", false, &tx)).unwrap();
        assert!(a.contains("-32700"), "{a}");
    }
}
