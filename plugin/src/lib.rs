//! The `kubectl multicluster` plugin as a library: the command line (`cli`), one module per
//! capability (the same names as in `multicluster-core` and the hub server), the local playground
//! (`local`, also used by the end-to-end tests) and what the commands share.

// One module per capability.
pub mod distribution;
pub mod fencing;
pub mod members;
pub mod services;
pub mod snapshot;
pub mod traffic;
pub mod vip;

// The playground, the hub server's installation, and what every command shares.
pub mod apply;
pub mod cli;
pub mod complete;
pub mod follow;
pub mod hub;
pub mod init;
pub mod local;
pub mod output;
