//! fleetform's redfish provider.
