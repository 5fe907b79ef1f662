"""The host: netlink, network namespaces, /proc and cgroups, kubelet's log directories, state."""
