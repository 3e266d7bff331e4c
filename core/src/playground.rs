//! Names the plugin's local playground and the hub server's binary share: the playground CSI
//! driver (`multicluster-webhook csi-driver`) serves under this name, and `local up` installs the
//! CSIDriver, StorageClass and snapshot classes that name it.

/// The playground CSI driver's name.
pub const CSI_DRIVER: &str = "playground.csi.multicluster.dev";
/// The topology segment that pins a playground volume to the node holding its directory.
pub const CSI_TOPOLOGY_KEY: &str = "topology.playground.csi.multicluster.dev/node";
