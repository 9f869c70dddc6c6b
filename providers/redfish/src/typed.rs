//! Typed reads through nv-redfish's generated schema types (`nv_redfish::schema`),
//! with a raw-JSON fallback for what real BMCs send outside the schema
//! (values the enums do not know, missing required properties).

use nv_redfish::schema::computer_system::ComputerSystem;
use serde::Serialize;
use serde_json::Value;

/// What the provider reads from a ComputerSystem.
#[derive(Debug, Clone, Default)]
pub struct SystemView {
    pub power_state: Option<String>,
    pub boot_target: Option<String>,
    pub boot_enabled: Option<String>,
    pub boot_mode: Option<String>,
    pub boot_targets_allowed: Option<Vec<String>>,
    /// True when nv-redfish's ComputerSystem type decoded the body.
    pub typed: bool,
}

fn enum_str<E: Serialize>(e: &E) -> Option<String> {
    match serde_json::to_value(e).ok()? {
        Value::String(s) if s != "UnsupportedValue" => Some(s),
        _ => None,
    }
}

fn raw(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).map(str::to_string)
}

/// Reads a ComputerSystem body.
pub fn system(v: &Value) -> SystemView {
    let mut out = SystemView {
        boot_targets_allowed: v
            .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            }),
        ..SystemView::default()
    };
    match serde_json::from_value::<ComputerSystem>(v.clone()) {
        Ok(cs) => {
            out.typed = true;
            out.power_state = cs.power_state.flatten().as_ref().and_then(enum_str);
            if let Some(boot) = &cs.boot {
                out.boot_target = boot
                    .boot_source_override_target
                    .flatten()
                    .as_ref()
                    .and_then(enum_str);
                out.boot_enabled = boot
                    .boot_source_override_enabled
                    .flatten()
                    .as_ref()
                    .and_then(enum_str);
                out.boot_mode = boot
                    .boot_source_override_mode
                    .flatten()
                    .as_ref()
                    .and_then(enum_str);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "ComputerSystem outside nv-redfish's schema; reading raw JSON")
        }
    }
    // Values outside the schema's enums (or an undecodable body): take the raw string.
    out.power_state = out.power_state.or_else(|| raw(v, "/PowerState"));
    out.boot_target = out
        .boot_target
        .or_else(|| raw(v, "/Boot/BootSourceOverrideTarget"));
    out.boot_enabled = out
        .boot_enabled
        .or_else(|| raw(v, "/Boot/BootSourceOverrideEnabled"));
    out.boot_mode = out
        .boot_mode
        .or_else(|| raw(v, "/Boot/BootSourceOverrideMode"));
    out
}
