//! The spawner backends.

#[cfg(feature = "docker")]
pub mod docker;
pub mod noop;
#[cfg(feature = "process")]
pub mod process;
