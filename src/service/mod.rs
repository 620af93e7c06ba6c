//! Running ssefs as a service: the mount's configuration file, the mount(8)
//! helper calling convention, and the glue to systemd's notify protocol
//! (READY=1, STOPPING=1, the watchdog).

pub mod config;
pub mod helper;
mod mount_opts;
pub mod notify;

pub use config::ServiceConfig;
pub use mount_opts::MountOpts;
