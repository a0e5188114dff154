//! Admin calls that change the served configuration: LUNs and ACLs
//! (through [`LiveConfig::change`] and [`Target::apply`]), resize,
//! save-config and reload (also on SIGHUP).
//!
//! Each runs on a blocking thread (opening a backstore, flushing a removed
//! one or writing the file may take a while), one at a time under the
//! [`LiveConfig`] lock, so the control loop never waits for it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::admin::rpc::{code, Call};
use crate::config::{LiveConfig, Settings};
use crate::scsi::{ChangeError, Target};

use super::control::Control;

/// An admin call's answer: a result, or an error code and message.
pub(super) type Answer = Result<Value, (i64, String)>;

fn refused(e: impl std::fmt::Display) -> (i64, String) {
    (code::REFUSED, e.to_string())
}

/// A refused change; a backstore that does not open is named by the
/// parameter or the file line of `settings` it came from.
fn change_error(e: ChangeError, settings: Option<&Settings>) -> (i64, String) {
    match (e, settings) {
        (e @ ChangeError::NoSuchLun(_), _) => (code::NOT_FOUND, e.to_string()),
        (ChangeError::Config(c), Some(s)) => refused(s.target_error(&c)),
        (e, _) => refused(e),
    }
}

/// Carries out one changing call.
pub(super) fn run_change(live: &Mutex<LiveConfig>, target: &Target, call: Call) -> Answer {
    let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
    match call {
        Call::Change(c) => {
            let (settings, loaded) = live.change(&c).map_err(refused)?;
            let applied = target
                .apply(&loaded.target)
                .map_err(|e| change_error(e, Some(&settings)))?;
            tracing::info!(change = ?c, ?applied, "admin: configuration changed");
            live.commit(settings);
            Ok(serde_json::to_value(applied).unwrap_or(Value::Null))
        }
        Call::LunResize { number, size } => {
            let blocks = target.resize(number, size).map_err(|e| change_error(e, None))?;
            tracing::info!(lun = number, blocks, "admin: LUN resized");
            Ok(json!({ "lun": number, "blocks": blocks }))
        }
        Call::SaveConfig { path } => {
            let p = live.save(path.as_deref().map(Path::new)).map_err(refused)?;
            tracing::info!(path = %p.display(), "admin: configuration saved");
            Ok(json!({ "path": p }))
        }
        Call::Reload => {
            let r = live.reload().map_err(refused)?;
            let applied = target
                .apply(&r.loaded.target)
                .map_err(|e| change_error(e, Some(&r.settings)))?;
            for w in &r.loaded.warnings {
                tracing::warn!("{w}");
            }
            if !r.restart_needed.is_empty() {
                tracing::warn!(settings = ?r.restart_needed, "reload: these settings take effect at the next start");
            }
            tracing::info!(?applied, "configuration reloaded");
            live.commit(r.settings);
            Ok(json!({ "applied": applied, "restart_needed": r.restart_needed }))
        }
        _ => Err((code::INTERNAL_ERROR, "not a changing call".into())),
    }
}

impl Control {
    /// Starts a changing call on a blocking thread; `reply` gets its answer.
    pub(super) fn on_change(&mut self, call: Call, reply: oneshot::Sender<Answer>) {
        if self.shutting_down() {
            let _ = reply.send(Err((code::SHUTTING_DOWN, "srptd is shutting down".into())));
            return;
        }
        let (live, target) = (Arc::clone(&self.live), Arc::clone(&self.target));
        tokio::task::spawn_blocking(move || {
            let _ = reply.send(run_change(&live, &target, call));
        });
    }

    /// SIGHUP: reload the config file; the outcome is logged.
    pub(super) fn on_sighup(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration");
        let (tx, rx) = oneshot::channel();
        self.on_change(Call::Reload, tx);
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err((_, m))) => tracing::error!("reload refused, the configuration is unchanged: {m}"),
                Err(_) => {}
            }
        });
    }
}
