//! fleetform's kube provider.
