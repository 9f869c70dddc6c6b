//! Which FirmwareInventory member is a manifest's firmware component. A name the manifest
//! uses that is a member's `Id` or `Name` is that member; `BIOS` and `BMC` also go by the
//! names vendors give them, from the BMC trees in `../shared/fixtures/redfish` (Dell R750,
//! HPE DL385, Supermicro HGX H100, DGX H100, GB200, the DMTF mockup). Copies that are not
//! what runs (backup, golden, staging, redundant, previous, capsule, ERoT) never count.

use serde_json::Value;

/// One FirmwareInventory member.
#[derive(Debug, Clone)]
pub(crate) struct InventoryMember {
    /// Its `@odata.id` (what `SimpleUpdate`'s `Targets` names).
    pub path: String,
    pub id: String,
    pub name: String,
    pub version: Value,
}

/// What the host firmware (`BIOS`) is called: Supermicro and the DMTF mockup `BIOS`, Grace
/// trays (GB200) `UEFI`, DGX `HostBIOS_0`, HPE `System ROM`, Dell `BIOS` (on an id
/// `<state>-<n>-<version>__BIOS.Setup.1-1`).
pub(crate) const BIOS_ALIASES: &[&str] = &["BIOS", "UEFI", "HostBIOS_0", "System ROM", "SBIOS"];

/// What the BMC firmware is called: `BMC` (Supermicro, mockup), `FW_BMC_0` (GB200),
/// `HostBMC_0` (DGX), `iLO 5`/`iLO 6`/`iLO 7` (HPE), `Integrated Dell Remote Access
/// Controller` (Dell), `XCC` (Lenovo).
pub(crate) const BMC_ALIASES: &[&str] = &[
    "BMC",
    "FW_BMC_0",
    "HostBMC_0",
    "iLO 5",
    "iLO 6",
    "iLO 7",
    "Integrated Dell Remote Access Controller",
    "XCC",
];

/// Words in an Id or Name that mark a copy that is not running.
const NOT_RUNNING: &[&str] = &[
    "backup",
    "golden",
    "staging",
    "redundant",
    "previous",
    "capsule",
    "erot",
];

fn running(m: &InventoryMember) -> bool {
    let id = m.id.to_ascii_lowercase();
    let name = m.name.to_ascii_lowercase();
    !NOT_RUNNING
        .iter()
        .any(|w| id.contains(w) || name.contains(w))
}

/// The member that is `component`: by Id, then Name, then (for `BIOS`/`BMC`) each alias in
/// turn; among several running copies, Dell's `Current-` one before its `Installed-` one.
pub(crate) fn member<'a>(
    inventory: &'a [InventoryMember],
    component: &str,
) -> Option<&'a InventoryMember> {
    let aliases: &[&str] = match component {
        "BIOS" => BIOS_ALIASES,
        "BMC" => BMC_ALIASES,
        _ => &[],
    };
    let names = std::iter::once(component).chain(aliases.iter().copied());
    for name in names {
        let mut found: Vec<&InventoryMember> = inventory
            .iter()
            .filter(|m| m.id.eq_ignore_ascii_case(name) || m.name.eq_ignore_ascii_case(name))
            .filter(|m| running(m))
            .collect();
        found.sort_by_key(|m| !m.id.starts_with("Current-"));
        if let Some(m) = found.first() {
            return Some(m);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(id: &str, name: &str, v: &str) -> InventoryMember {
        InventoryMember {
            path: format!("/redfish/v1/UpdateService/FirmwareInventory/{id}"),
            id: id.into(),
            name: name.into(),
            version: json!(v),
        }
    }

    #[test]
    fn bios_and_bmc_are_found_under_each_vendors_name_and_never_as_a_spare_copy() {
        let dell = [
            m("Previous-159-1.2.4__BIOS.Setup.1-1", "BIOS", "1.2.4"),
            m("Installed-159-1.8.2__BIOS.Setup.1-1", "BIOS", "1.8.2"),
            m("Current-159-1.8.2__BIOS.Setup.1-1", "BIOS", "1.8.2"),
            m(
                "Installed-25227-6.00.30.00__iDRAC.Embedded.1-1",
                "Integrated Dell Remote Access Controller",
                "6.00.30.00",
            ),
        ];
        assert!(member(&dell, "BIOS").unwrap().id.starts_with("Current-"));
        assert_eq!(member(&dell, "BMC").unwrap().version, "6.00.30.00");
        let supermicro = [
            m("Golden_BIOS", "BIOS Golden", "1.3"),
            m("Backup_BMC", "BMC Backup", "Not Present"),
            m("BMC", "BMC", "11.01.01"),
        ];
        assert_eq!(member(&supermicro, "BMC").unwrap().id, "BMC");
        assert!(
            member(&supermicro, "BIOS").is_none(),
            "only spare copies of the BIOS"
        );
        let gb200 = [
            m("UEFI", "UEFI", "gcid"),
            m("FW_ERoT_BMC_0", "Software Inventory", "x"),
            m("FW_BMC_0", "Software Inventory", "24.12"),
        ];
        assert_eq!(member(&gb200, "BIOS").unwrap().id, "UEFI");
        assert_eq!(member(&gb200, "BMC").unwrap().id, "FW_BMC_0");
        let hpe = [
            m("8", "Redundant System ROM", "A42 v2.58"),
            m("2", "System ROM", "A42 v2.60"),
            m("1", "iLO 5", "2.72"),
        ];
        assert_eq!(member(&hpe, "BIOS").unwrap().id, "2");
        assert_eq!(member(&hpe, "BMC").unwrap().id, "1");
        assert_eq!(
            member(&gb200, "fw_bmc_0").unwrap().id,
            "FW_BMC_0",
            "any member by its Id"
        );
    }
}
