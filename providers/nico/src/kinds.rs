//! The NICo object kinds fleetform manages, as the spec (REST API 1.5.0) defines them:
//! where each lives, which fields a PATCH can change, which only a create sets, how
//! fleetform marks what it owns, and which status means ready.

/// How fleetform marks an object it created, so that adopting one by name never takes
/// over a person's object. NICo has no ownership field; only some kinds carry `labels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The label [`OWNER_LABEL`] = [`OWNER_VALUE`] (kinds whose schema has `labels`).
    Label,
    /// The description ends with [`OWNER_MARK`] (kinds without `labels`).
    Description,
    /// NICo's own objects (machines): found by `id`, never created or deleted by fleetform,
    /// only changed.
    Site,
}

/// The ownership label's key.
pub const OWNER_LABEL: &str = "fleetform.io/managed-by";
/// The ownership label's value.
pub const OWNER_VALUE: &str = "fleetform";
/// The ownership mark appended to the description of kinds without labels.
pub const OWNER_MARK: &str = " [managed by fleetform]";
/// `Labels.maxProperties` in the spec.
pub const MAX_LABELS: usize = 10;

/// One kind of NICo object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The address segment: `nico:<site>/<kind>/<name>`.
    pub name: &'static str,
    /// The collection under `/v2/org/{org}/nico/`.
    pub collection: &'static str,
    /// The spec's schema of the object, of its create and of its update request.
    pub schemas: (&'static str, &'static str, &'static str),
    /// Top-level fields the update request accepts (changed in place).
    pub mutable: &'static [&'static str],
    /// How fleetform marks ownership.
    pub owner: Owner,
    /// Statuses that mean ready.
    pub ready: &'static [&'static str],
}

impl Kind {
    /// True when a change of top-level field `field` needs delete + create.
    pub fn requires_replace(&self, field: &str) -> bool {
        !self.mutable.contains(&field)
    }
}

/// Every kind, in dependency order (a kind's references point only to earlier ones).
pub const KINDS: &[Kind] = &[
    Kind {
        name: "instance-type",
        collection: "instance/type",
        schemas: (
            "InstanceType",
            "InstanceTypeCreateRequest",
            "InstanceTypeUpdateRequest",
        ),
        mutable: &["description", "labels", "machineCapabilities"],
        owner: Owner::Label,
        ready: &["Ready"],
    },
    Kind {
        name: "allocation",
        collection: "allocation",
        schemas: (
            "Allocation",
            "AllocationCreateRequest",
            "AllocationUpdateRequest",
        ),
        mutable: &["description"],
        owner: Owner::Description,
        ready: &["Registered"],
    },
    Kind {
        name: "vpc",
        collection: "vpc",
        schemas: ("VPC", "VpcCreateRequest", "VpcUpdateRequest"),
        mutable: &[
            "description",
            "labels",
            "networkSecurityGroupId",
            "nvLinkLogicalPartitionId",
        ],
        owner: Owner::Label,
        ready: &["Ready"],
    },
    Kind {
        name: "subnet",
        collection: "subnet",
        schemas: ("Subnet", "SubnetCreateRequest", "SubnetUpdateRequest"),
        mutable: &["description"],
        owner: Owner::Description,
        ready: &["Ready"],
    },
    Kind {
        name: "ssh-key-group",
        collection: "sshkeygroup",
        schemas: (
            "SshKeyGroup",
            "SshKeyGroupCreateRequest",
            "SshKeyGroupUpdateRequest",
        ),
        mutable: &["description", "siteIds", "sshKeyIds"],
        owner: Owner::Description,
        ready: &["Synced"],
    },
    Kind {
        name: "operating-system",
        collection: "operating-system",
        schemas: (
            "OperatingSystem",
            "OperatingSystemCreateRequest",
            "OperatingSystemUpdateRequest",
        ),
        mutable: &[
            "description",
            "ipxeScript",
            "imageUrl",
            "imageSha",
            "imageAuthType",
            "imageDisk",
            "rootFsId",
            "rootFsLabel",
            "phoneHomeEnabled",
            "userData",
            "isCloudInit",
            "allowOverride",
        ],
        owner: Owner::Description,
        ready: &["Ready"],
    },
    Kind {
        name: "instance",
        collection: "instance",
        schemas: ("Instance", "InstanceCreateRequest", "InstanceUpdateRequest"),
        mutable: &[
            "description",
            "operatingSystemId",
            "ipxeScript",
            "sshKeyGroupIds",
            "networkSecurityGroupId",
            "userData",
            "alwaysBootWithCustomIpxe",
            "phoneHomeEnabled",
            "labels",
            "secondaryVpcIds",
            "interfaces",
            "infinibandInterfaces",
            "nvLinkInterfaces",
        ],
        owner: Owner::Label,
        ready: &["Ready"],
    },
    Kind {
        name: "machine",
        collection: "machine",
        schemas: ("Machine", "", "MachineUpdateRequest"),
        // Each is its own PATCH: the spec refuses instance type, maintenance and labels
        // updates in one request.
        mutable: &["instanceTypeId", "maintenance", "labels"],
        owner: Owner::Site,
        ready: &["Ready", "InUse", "Maintenance"],
    },
];

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}
