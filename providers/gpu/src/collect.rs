//! Collecting an [`Inventory`] through NVML. STRICTLY READ-ONLY.
//!
//! Only NVML getters are called here (plus event registration, which changes
//! nothing on the GPU). Never add a setter: no MIG mode, clocks, power limits,
//! persistence mode, ECC mode, counter resets or GPU resets. fleetform changes
//! GPUs only through the Kubernetes path (MIG manager config, break/fix plans).
//!
//! nvml-wrapper dlopens `libnvidia-ml.so.1` at run time, so this builds and
//! runs everywhere; without the library, a driver or a GPU, [`collect`] returns
//! [`GpuError::NvmlUnavailable`].

use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, RetirementCause, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};

use crate::inventory::{
    Ecc, EccCounts, Gpu, Inventory, MigDevice, MigState, NvLink, RemappedRows, RetiredPages,
    XidEvent, profile_from_mig_name,
};

/// Why no inventory could be collected.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No NVML library, no driver, no permission or no GPU. Not fatal for
    /// fleetform: the node simply has no GPU inventory.
    #[error("{0}")]
    NvmlUnavailable(String),
    /// NVML loaded but a node-level query failed.
    #[error("NVML query failed: {what}")]
    Nvml {
        /// The query.
        what: String,
        /// The NVML error.
        #[source]
        source: NvmlError,
    },
}

/// How to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Node name to record; `None` = `$NODE_NAME`, else `$HOSTNAME`, else /etc/hostname.
    pub node: Option<String>,
    /// How long to wait for critical XID events; `None` = do not poll. NVML only
    /// delivers events that happen after registration, so this sees XIDs raised
    /// during the window, not history (that is in the kernel log / DCGM).
    pub xid_poll: Option<Duration>,
    /// Path of libnvidia-ml.so.1; `None` = `$FLEETFORM_NVML_LIB`, else the
    /// loader's search path, then [`NVML_FALLBACK_PATHS`].
    pub nvml_lib: Option<std::path::PathBuf>,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            node: None,
            xid_poll: Some(Duration::from_millis(250)),
            nvml_lib: None,
        }
    }
}

/// Highest NVLink index NVML knows (NVML_NVLINK_MAX_LINKS = 18 on Hopper/Blackwell).
const NVLINK_MAX_LINKS: u32 = 18;

/// Collects this node's GPU inventory with default options.
pub fn collect() -> Result<Inventory, GpuError> {
    collect_with(&CollectOptions::default())
}

fn node_name(opts: &CollectOptions) -> String {
    opts.node
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn unavailable(e: &NvmlError) -> GpuError {
    let reason = match e {
        NvmlError::LibloadingError(inner) => format!("cannot load libnvidia-ml.so ({inner})"),
        NvmlError::LibraryNotFound => "libnvidia-ml.so not found".to_string(),
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to use NVML".to_string(),
        other => format!("{other}"),
    };
    GpuError::NvmlUnavailable(format!("NVML not available: {reason}"))
}

/// Keeps a value, records `NotSupported` (and symbols an older driver lacks) as
/// absent, and any other error as absent plus a line in `errors`.
fn keep<T>(r: Result<T, NvmlError>, what: &str, errors: &mut Vec<String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(
            NvmlError::NotSupported
            | NvmlError::FunctionNotFound
            | NvmlError::FailedToLoadSymbol(_),
        ) => None,
        Err(e) => {
            errors.push(format!("{what}: {e:?} ({e})"));
            None
        }
    }
}

/// Where NVML often lives when it is not on the loader's path: the GPU
/// Operator's driver container root, container-toolkit mounts, distro paths.
pub const NVML_FALLBACK_PATHS: &[&str] = &[
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/usr/lib64/libnvidia-ml.so.1",
    "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
];

/// Loads NVML: the explicit path, or the loader's search, then the fallbacks.
/// Only a failure to load the library moves on to the next candidate.
fn init_nvml(opts: &CollectOptions) -> Result<Nvml, NvmlError> {
    let explicit = opts.nvml_lib.clone().or_else(|| {
        std::env::var_os("FLEETFORM_NVML_LIB")
            .filter(|v| !v.is_empty())
            .map(Into::into)
    });
    if let Some(path) = explicit {
        return Nvml::builder().lib_path(path.as_os_str()).init();
    }
    let first = Nvml::init();
    let Err(NvmlError::LibloadingError(_)) = &first else {
        return first;
    };
    for p in NVML_FALLBACK_PATHS {
        if std::path::Path::new(p).exists() {
            return Nvml::builder().lib_path(std::ffi::OsStr::new(p)).init();
        }
    }
    first
}

/// Collects with options. Read-only; see the module docs.
pub fn collect_with(opts: &CollectOptions) -> Result<Inventory, GpuError> {
    let nvml = init_nvml(opts).map_err(|e| unavailable(&e))?;
    let count = nvml.device_count().map_err(|e| unavailable(&e))?;
    if count == 0 {
        return Err(GpuError::NvmlUnavailable(
            "NVML not available: no GPU found".to_string(),
        ));
    }
    let mut inv = Inventory::new(node_name(opts));
    inv.driver_version = keep(nvml.sys_driver_version(), "driver version", &mut inv.errors);
    inv.nvml_version = keep(nvml.sys_nvml_version(), "NVML version", &mut inv.errors);
    inv.cuda_driver_version = keep(
        nvml.sys_cuda_driver_version(),
        "CUDA driver version",
        &mut inv.errors,
    )
    .map(|v| {
        format!(
            "{}.{}",
            nvml_wrapper::cuda_driver_version_major(v),
            nvml_wrapper::cuda_driver_version_minor(v)
        )
    });
    for index in 0..count {
        let mut g = Gpu {
            index,
            ..Gpu::default()
        };
        match nvml.device_by_index(index) {
            Ok(dev) => read_gpu(&dev, &mut g),
            Err(e) => g.errors.push(format!("device handle: {e:?} ({e})")),
        }
        inv.gpus.push(g);
    }
    if let Some(window) = opts.xid_poll {
        poll_xids(&nvml, window, &mut inv);
    }
    Ok(inv)
}

fn read_gpu(dev: &nvml_wrapper::Device<'_>, g: &mut Gpu) {
    let e = &mut g.errors;
    g.name = keep(dev.name(), "name", e);
    g.uuid = keep(dev.uuid(), "uuid", e);
    if let Some(pci) = keep(dev.pci_info(), "pci info", e) {
        g.pci_bus_id = Some(pci.bus_id);
        // nvmlPciInfo_t.pciDeviceId holds (device << 16) | vendor, as in mig-parted's device-filter.
        g.pci_device_id = Some(format!("0x{:08X}", pci.pci_device_id));
    }
    if let Some(m) = keep(dev.memory_info(), "memory", e) {
        g.memory_total_bytes = Some(m.total);
        g.memory_used_bytes = Some(m.used);
    }
    if let Some(mode) = keep(dev.mig_mode(), "MIG mode", e) {
        let mut state = MigState {
            current_enabled: mode.current == 1,
            pending_enabled: mode.pending == 1,
            devices: Vec::new(),
        };
        if state.current_enabled {
            let max = keep(dev.mig_device_count(), "MIG device count", e).unwrap_or(0);
            for i in 0..max {
                match dev.mig_device_by_index(i) {
                    Ok(md) => {
                        let mut errs = Vec::new();
                        let name = keep(md.name(), "MIG name", &mut errs);
                        state.devices.push(MigDevice {
                            index: i,
                            profile: name.as_deref().and_then(profile_from_mig_name),
                            uuid: keep(md.uuid(), "MIG uuid", &mut errs),
                            placement: None,
                            memory_total_bytes: keep(md.memory_info(), "MIG memory", &mut errs)
                                .map(|m| m.total),
                        });
                        e.extend(errs.into_iter().map(|x| format!("MIG device {i}: {x}")));
                    }
                    // Empty slots answer NotFound (or InvalidArg); that is not an error.
                    Err(NvmlError::NotFound | NvmlError::InvalidArg | NvmlError::NotSupported) => {}
                    Err(err) => e.push(format!("MIG device {i}: {err:?} ({err})")),
                }
            }
        }
        g.mig = Some(state);
    }
    if let Some(mode) = keep(dev.is_ecc_enabled(), "ECC mode", e) {
        let counts = |counter: EccCounter, label: &str, e: &mut Vec<String>| {
            let corrected = keep(
                dev.total_ecc_errors(MemoryError::Corrected, counter),
                &format!("ECC {label} corrected"),
                e,
            );
            let uncorrected = keep(
                dev.total_ecc_errors(MemoryError::Uncorrected, counter),
                &format!("ECC {label} uncorrected"),
                e,
            );
            (corrected.is_some() || uncorrected.is_some()).then_some(EccCounts {
                corrected,
                uncorrected,
            })
        };
        let volatile = counts(EccCounter::Volatile, "volatile", e);
        let aggregate = counts(EccCounter::Aggregate, "aggregate", e);
        g.ecc = Some(Ecc {
            current_enabled: Some(mode.currently_enabled),
            pending_enabled: Some(mode.pending_enabled),
            volatile,
            aggregate,
        });
    }
    {
        let pending = keep(dev.are_pages_pending_retired(), "retired pages pending", e);
        let single_bit = keep(
            dev.retired_pages(RetirementCause::MultipleSingleBitEccErrors),
            "retired pages (SBE)",
            e,
        )
        .map(|v| v.len() as u64);
        let double_bit = keep(
            dev.retired_pages(RetirementCause::DoubleBitEccError),
            "retired pages (DBE)",
            e,
        )
        .map(|v| v.len() as u64);
        if pending.is_some() || single_bit.is_some() || double_bit.is_some() {
            g.retired_pages = Some(RetiredPages {
                pending,
                single_bit,
                double_bit,
            });
        }
    }
    g.remapped_rows = read_remapped_rows(dev, e);
    {
        let mut links = Vec::new();
        for link in 0..NVLINK_MAX_LINKS {
            match dev.link_wrapper_for(link).is_active() {
                Ok(active) => links.push(NvLink { link, active }),
                Err(
                    NvmlError::NotSupported | NvmlError::InvalidArg | NvmlError::FunctionNotFound,
                ) => {}
                Err(err) => e.push(format!("NVLink {link}: {err:?} ({err})")),
            }
        }
        if !links.is_empty() {
            g.nvlinks = Some(links);
        }
    }
    g.power_draw_mw = keep(dev.power_usage(), "power draw", e);
    g.power_limit_mw = keep(dev.enforced_power_limit(), "power limit", e);
    g.temperature_c = keep(dev.temperature(TemperatureSensor::Gpu), "temperature", e);
    g.temperature_slowdown_c = keep(
        dev.temperature_threshold(TemperatureThreshold::Slowdown),
        "slowdown threshold",
        e,
    );
    g.temperature_shutdown_c = keep(
        dev.temperature_threshold(TemperatureThreshold::Shutdown),
        "shutdown threshold",
        e,
    );
    g.throttle_reasons =
        keep(dev.current_throttle_reasons(), "throttle reasons", e).map(throttle_names);
}

fn throttle_names(r: ThrottleReasons) -> Vec<String> {
    let table: &[(ThrottleReasons, &str)] = &[
        (ThrottleReasons::GPU_IDLE, "gpu-idle"),
        (
            ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
            "applications-clocks-setting",
        ),
        (ThrottleReasons::SW_POWER_CAP, "sw-power-cap"),
        (ThrottleReasons::HW_SLOWDOWN, "hw-slowdown"),
        (ThrottleReasons::SYNC_BOOST, "sync-boost"),
        (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw-thermal-slowdown"),
        (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw-thermal-slowdown"),
        (
            ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
            "hw-power-brake-slowdown",
        ),
        (
            ThrottleReasons::DISPLAY_CLOCK_SETTING,
            "display-clock-setting",
        ),
    ];
    table
        .iter()
        .filter(|(flag, _)| r.contains(*flag))
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Row remapping through NVML field values (nvml-wrapper has no wrapper for
/// `nvmlDeviceGetRemappedRows`; the `NVML_FI_DEV_REMAPPED_*` fields carry the same numbers).
fn read_remapped_rows(dev: &nvml_wrapper::Device<'_>, e: &mut Vec<String>) -> Option<RemappedRows> {
    let ids = [
        FieldId(NVML_FI_DEV_REMAPPED_COR),
        FieldId(NVML_FI_DEV_REMAPPED_UNC),
        FieldId(NVML_FI_DEV_REMAPPED_PENDING),
        FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
    ];
    let samples = keep(dev.field_values_for(&ids), "remapped rows", e)?;
    let value = |s: &Result<FieldValueSample, NvmlError>| -> Option<u64> {
        match s {
            Ok(FieldValueSample { value: Ok(v), .. }) => match v {
                nvml_wrapper::enums::device::SampleValue::U32(x) => Some(u64::from(*x)),
                nvml_wrapper::enums::device::SampleValue::U64(x) => Some(*x),
                nvml_wrapper::enums::device::SampleValue::I64(x) => u64::try_from(*x).ok(),
                nvml_wrapper::enums::device::SampleValue::F64(x) => Some(*x as u64),
            },
            _ => None,
        }
    };
    let vals: Vec<Option<u64>> = samples.iter().map(value).collect();
    let get = |i: usize| vals.get(i).copied().flatten();
    let rows = RemappedRows {
        correctable: get(0),
        uncorrectable: get(1),
        pending: get(2).map(|v| v != 0),
        failure: get(3).map(|v| v != 0),
    };
    (rows != RemappedRows::default()).then_some(rows)
}

fn poll_xids(nvml: &Nvml, window: Duration, inv: &mut Inventory) {
    let mut set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(NvmlError::NotSupported) => return,
        Err(err) => {
            inv.errors.push(format!("XID event set: {err:?} ({err})"));
            return;
        }
    };
    let mut registered = 0;
    for g in &inv.gpus {
        let Ok(dev) = nvml.device_by_index(g.index) else {
            continue;
        };
        let supported = dev
            .supported_event_types()
            .map(|t| t.contains(EventTypes::CRITICAL_XID_ERROR))
            .unwrap_or(false);
        if !supported {
            continue;
        }
        match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                set = s;
                registered += 1;
            }
            Err(err) => {
                // The set is consumed on failure; give up on XIDs rather than guess.
                inv.errors.push(format!(
                    "XID event registration on GPU {}: {:?}",
                    g.index, err.error
                ));
                return;
            }
        }
    }
    if registered == 0 {
        return;
    }
    let deadline = Instant::now() + window;
    let at = crate::time::now_rfc3339();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
        match set.wait(ms) {
            Ok(ev) => {
                let Some(XidError::Value(xid)) = ev.event_data else {
                    continue;
                };
                let uuid = ev.device.uuid().ok();
                if let Some(g) = inv
                    .gpus
                    .iter_mut()
                    .find(|g| g.uuid.is_some() && g.uuid == uuid)
                {
                    g.xid_events.push(XidEvent {
                        xid,
                        at: Some(at.clone()),
                    });
                } else {
                    inv.errors.push(format!(
                        "XID {xid} on a device not in the inventory ({uuid:?})"
                    ));
                }
            }
            Err(NvmlError::Timeout) => break,
            Err(err) => {
                inv.errors.push(format!("XID event wait: {err:?} ({err})"));
                break;
            }
        }
    }
}
