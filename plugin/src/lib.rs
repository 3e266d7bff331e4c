//! The `kubectl multicluster` plugin as a library: the command line (`cli`), the local playground
//! (`local`, also used by the end-to-end tests) and output formatting (`output`).

pub mod apply;
pub mod cli;
pub mod complete;
pub mod distribute;
pub mod follow;
pub mod hub;
pub mod init;
pub mod intent;
pub mod local;
pub mod members;
pub mod output;
pub mod preview;
pub mod proxy;
pub mod restore;
pub mod snapshot;
pub mod traffic;
pub mod vip;
