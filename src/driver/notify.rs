//! The service manager's notification protocol (systemd `sd_notify(3)`,
//! `Type=notify` units): READY=1 once the listeners are up, STATUS= with
//! what srptd serves, STOPPING=1 when a shutdown begins, WATCHDOG=1 from the
//! control loop while it runs. Nothing is sent when `NOTIFY_SOCKET` is not
//! set (srptd not started by a service manager).

use std::time::Duration;

use sd_notify::NotifyState;

/// Talks to the service manager, if there is one.
#[derive(Debug)]
pub(super) struct ServiceNotifier {
    /// How often to send WATCHDOG=1 (half of `WATCHDOG_USEC`, the interval
    /// `sd_watchdog_enabled(3)` recommends), if the unit has a watchdog.
    watchdog: Option<Duration>,
    /// The STATUS= last sent (sent again only when it changes).
    status: String,
    /// Whether a service manager listens (`NOTIFY_SOCKET` set at start).
    active: bool,
}

impl ServiceNotifier {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env() -> ServiceNotifier {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| watchdog_interval(usec));
        ServiceNotifier {
            watchdog,
            status: String::new(),
            active: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    /// Whether anyone listens: callers skip building a status otherwise.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The listeners are up: READY=1 with a first status.
    pub fn ready(&mut self, status: String) {
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
    }

    /// STATUS=, if it changed since the last one.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
    }

    /// A shutdown has begun.
    pub fn stopping(&mut self) {
        let status = "stopping: logging initiators out".to_owned();
        send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
        self.status = status;
    }

    /// The watchdog interval, if the unit has a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The control loop is alive.
    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }
}

/// Half the watchdog timeout (at least 1 ms).
fn watchdog_interval(usec: u64) -> Duration {
    Duration::from_micros((usec / 2).max(1000))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

/// The STATUS= line: what an operator wants from `systemctl status`.
pub(super) fn status_line(sessions: usize, channels: usize, luns: usize, devices: &[String]) -> String {
    let devices = if devices.is_empty() {
        "all RDMA devices".to_owned()
    } else {
        devices.join(", ")
    };
    format!("serving {luns} LUN(s) on {devices}: {sessions} session(s), {channels} channel(s)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn status_line_names_sessions_channels_and_luns() {
        assert_eq!(
            status_line(2, 5, 3, &["rxe0".into(), "rxe1".into()]),
            "serving 3 LUN(s) on rxe0, rxe1: 2 session(s), 5 channel(s)"
        );
        assert_eq!(
            status_line(0, 0, 1, &[]),
            "serving 1 LUN(s) on all RDMA devices: 0 session(s), 0 channel(s)"
        );
    }

    #[test]
    fn watchdog_pings_twice_per_timeout() {
        assert_eq!(watchdog_interval(30_000_000), Duration::from_secs(15));
        assert_eq!(watchdog_interval(10), Duration::from_millis(1));
    }

    /// The messages reach a service manager's socket as sd_notify(3)
    /// specifies, and an unchanged status is not sent again. (One test
    /// touches NOTIFY_SOCKET: the environment is process-wide.)
    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("srptd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        std::env::set_var("WATCHDOG_USEC", "3000000");
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        let mut n = ServiceNotifier::from_env();
        assert!(n.is_active());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(1500)));
        let recv = || {
            let mut b = [0u8; 512];
            let len = sock.recv(&mut b).unwrap();
            String::from_utf8_lossy(&b[..len]).into_owned()
        };
        n.ready("serving 1 LUN(s)".into());
        assert_eq!(recv(), "READY=1\nSTATUS=serving 1 LUN(s)\n");
        n.status("serving 1 LUN(s)".into());
        n.status("serving 2 LUN(s)".into());
        assert_eq!(recv(), "STATUS=serving 2 LUN(s)\n");
        n.watchdog();
        assert_eq!(recv(), "WATCHDOG=1\n");
        n.stopping();
        assert_eq!(recv(), "STOPPING=1\nSTATUS=stopping: logging initiators out\n");
        for v in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(v);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
