//! The spawner backends.

pub mod noop;
#[cfg(feature = "process")]
pub mod process;
