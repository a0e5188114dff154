//! Statistics for the admin socket's `stats` call and the Prometheus
//! listener (`--metrics ADDR`).
//!
//! Both read the same figures the same way: the control loop asks every
//! poller for a snapshot message ([`super::poller::PollerSnapshot`]: its
//! channels' figures and the totals of those it has closed) and a task of
//! its own gathers the answers, so neither the control loop nor a poller
//! ever waits for a reader; a poller answers between two passes over its
//! completion queues. The listener is a small HTTP/1.1 server on the
//! control-plane runtime: `GET /metrics` (and `HEAD`) answers the text
//! format ([`crate::admin::prometheus`]), other paths 404, other methods
//! 405; one request per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::admin::prometheus;
use crate::admin::rpc::Call;
use crate::proto::{ChannelStats, LunStats};

use super::admin::{stats_json, AdminRequest, Gathered, SessionRows};
use super::channel::ChannelKey;

/// The `stats` result: logins, totals (closed channels, open ones, all),
/// per LUN (all channels), and each open channel with its session.
pub(super) fn stats_result(logins: u64, rejects: u64, sessions: Vec<SessionRows>, g: &Gathered) -> Value {
    let mut who: BTreeMap<ChannelKey, (String, String, Value)> = BTreeMap::new();
    for s in sessions {
        for (key, facts) in s.channels {
            who.insert(key, (s.initiator.clone(), s.target_port.clone(), facts));
        }
    }
    let mut open = ChannelStats::default();
    let mut luns = g.closed_luns.clone();
    let mut channels = Vec::with_capacity(g.channels.len());
    // Every channel a poller reported counts, even one the connection
    // table no longer (or not yet) lists.
    for (key, snap) in &g.channels {
        open += &snap.stats;
        luns.merge(&snap.luns);
        let (initiator, target_port, facts) =
            who.remove(key)
                .unwrap_or((String::new(), String::new(), json!({ "key": key.0 })));
        let mut ch = match facts {
            Value::Object(o) => o,
            _ => Default::default(),
        };
        ch.insert("initiator".into(), initiator.into());
        ch.insert("target_port".into(), target_port.into());
        ch.insert("in_flight".into(), snap.in_flight.into());
        ch.insert("stats".into(), stats_json(&snap.stats));
        ch.insert("luns".into(), luns_json(&snap.luns));
        channels.push(Value::Object(ch));
    }
    let mut total = g.closed.clone();
    total += &open;
    json!({
        "logins": logins,
        "rejects": rejects,
        "open_channels": g.channels.len(),
        "total": stats_json(&total),
        "closed_channels": stats_json(&g.closed),
        "open": stats_json(&open),
        "luns": luns_json(&luns),
        "channels": channels,
    })
}

fn luns_json(l: &LunStats) -> Value {
    serde_json::to_value(l).unwrap_or(Value::Null)
}

/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 8192;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the metrics listener.
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts scrapes until the runtime stops.
pub(super) async fn serve(listener: TcpListener, to_control: mpsc::Sender<AdminRequest>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, to_control.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head`: `HEAD`, headers only).
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request head (sans I/O).
fn route(head: &[u8]) -> Route {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Route::BadRequest;
    };
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body }
    )
}

/// Serves one request.
async fn connection(mut stream: TcpStream, to_control: mpsc::Sender<AdminRequest>) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            if head.len() > MAX_HEAD {
                return false;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    let text = "text/plain; charset=utf-8";
    let answer = match read {
        Ok(true) => match route(&head) {
            Route::Metrics { head } => match gather(&to_control).await {
                Some(v) => response(
                    "200 OK",
                    prometheus::CONTENT_TYPE,
                    &prometheus::render(&v),
                    head,
                    "",
                ),
                None => response(
                    "503 Service Unavailable",
                    text,
                    "srptd is shutting down\n",
                    head,
                    "",
                ),
            },
            Route::NotFound => response("404 Not Found", text, "not found: try /metrics\n", false, ""),
            Route::MethodNotAllowed => response(
                "405 Method Not Allowed",
                text,
                "method not allowed\n",
                false,
                "Allow: GET, HEAD\r\n",
            ),
            Route::BadRequest => response("400 Bad Request", text, "bad request\n", false, ""),
        },
        _ => response("400 Bad Request", text, "bad request\n", false, ""),
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The `stats` result, asked of the control loop like the admin socket does.
async fn gather(to_control: &mpsc::Sender<AdminRequest>) -> Option<Value> {
    let (tx, rx) = oneshot::channel();
    to_control
        .send(AdminRequest {
            call: Call::Stats,
            reply: tx,
        })
        .await
        .ok()?;
    rx.await.ok()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_route_by_method_and_path() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response("200 OK", "text/plain", "abc", false, "");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\nabc"));
        let r = response("200 OK", "text/plain", "abc", true, "");
        assert!(r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n"));
    }
}
