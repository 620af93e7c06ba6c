//! systemd's notify protocol for `Type=notify` units: READY=1 once the mount
//! answers, STOPPING=1 when asked to stop, and watchdog keep-alives while the
//! mount keeps answering. Every call is a no-op outside systemd (no
//! $NOTIFY_SOCKET), and a failure to notify is logged, never fatal: the mount
//! itself works either way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the mount is up.
pub fn ready(mountpoint: &Path) {
    let status = format!("STATUS=mounted on {}", mountpoint.display());
    send(&[NotifyState::Ready, NotifyState::Custom(&status)]);
}

/// Tells systemd we are unmounting on its request (or anyone's signal).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The keep-alive period when systemd runs a watchdog on us: half its
/// timeout, as sd_watchdog_enabled(3) advises.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Starts the keep-alive thread when systemd asked for a watchdog. Each
/// keep-alive follows a statfs(2) of the mount point, which the kernel
/// always forwards to this daemon: a hung filesystem stops the keep-alives
/// and systemd restarts the service (Restart=on-failure), instead of a
/// thread that pings forever beside a dead mount.
pub fn spawn_watchdog(mountpoint: &Path) {
    let Some(period) = watchdog_period() else {
        return;
    };
    let mp: PathBuf = mountpoint.to_path_buf();
    tracing::debug!(
        period_ms = period.as_millis() as u64,
        "watchdog keep-alives"
    );
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            match nix::sys::statvfs::statvfs(&mp) {
                Ok(_) => send(&[NotifyState::Watchdog]),
                Err(e) => {
                    tracing::warn!(error = %e, mountpoint = %mp.display(), "watchdog probe failed")
                }
            }
            std::thread::sleep(period);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the watchdog thread");
    }
}
