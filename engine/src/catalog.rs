//! MIG profile catalogue per GPU model and the version-compatibility table (validator side).
