//! fleetform's ngc provider.
