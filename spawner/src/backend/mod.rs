//! The spawner backends.

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod noop;
#[cfg(feature = "process")]
pub mod process;
