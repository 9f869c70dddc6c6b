//! fleetform's gpu provider.
