//! The client side of the admin socket (`srptd ctl`): one request, one
//! response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::rpc;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {path}: {source} (is srptd running, with its admin socket there? see `srptd --admin-socket`)")]
    Connect { path: String, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("srptd answered something that is not JSON-RPC: {0}")]
    BadResponse(String),
    /// srptd refused the call: the JSON-RPC error.
    #[error("{message} (JSON-RPC error {code})")]
    Rpc { code: i64, message: String },
}

/// Sends one call and returns its result.
pub fn call(socket: &Path, method: &str, params: Option<Value>) -> Result<Value, CallError> {
    let mut s = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let line = rpc::request_line(method, params, 1);
    s.write_all(line.as_bytes())?;
    s.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let v: Value =
        serde_json::from_str(&answer).map_err(|_| CallError::BadResponse(answer.trim().to_owned()))?;
    if let Some(e) = v.get("error") {
        return Err(CallError::Rpc {
            code: e["code"].as_i64().unwrap_or(0),
            message: e["message"].as_str().unwrap_or("").to_owned(),
        });
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| CallError::BadResponse(answer.trim().to_owned()))
}
