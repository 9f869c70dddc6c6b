#!/usr/bin/env bash
# Device check for the gpu provider: collects a real GPU inventory through NVML
# and checks it is populated and plausible. READ-ONLY: the example binary calls
# NVML getters only, and this script runs `nvidia-smi` in query mode only; it
# compares the MIG/ECC/power-limit/persistence settings before and after to
# prove nothing changed.
#
# Usage (repo root):  bash tests/device/nvml-check.sh
# Output:             $OUT/gpu-inventory.json, gpu-inventory.txt, nvidia-smi.csv, check.log
#                     ($OUT defaults to target/device-out)
# Binary:             builds `cargo build --release -p fleetform-gpu --no-default-features
#                     --example gpu-inventory` when cargo is present; otherwise (or when
#                     that build fails) uses $GPU_INVENTORY_BIN or
#                     target/release/examples/gpu-inventory (build it on the dev
#                     machine and carry it: the device image has no Rust and no network).
# Exit codes:         0 all checks passed; 1 a check failed; 3 NVML not available
#                     (no driver / no GPU: the NvmlUnavailable path); 4 no binary.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${OUT:-$REPO/target/device-out}
mkdir -p "$OUT"
BIN=${GPU_INVENTORY_BIN:-$REPO/target/release/examples/gpu-inventory}
LOG="$OUT/check.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# --no-default-features: the bare binary, without the engine (no TLS, no libgit2),
# so it builds fast and links only against libc; NVML is dlopened at run time.
built=0
build() {  # $1: extra cargo flag (--offline or empty)
    (cd "$REPO" && timeout 220 cargo build --release -q $1 -p fleetform-gpu --no-default-features --example gpu-inventory) >>"$LOG" 2>&1
}
if command -v cargo >/dev/null 2>&1; then
    # Offline first: the device machine has no network, and waiting on it would
    # burn device time when a carried binary is there anyway.
    say "building gpu-inventory (release, --no-default-features, --offline) ..."
    if build --offline; then
        built=1
    elif [ ! -x "$BIN" ]; then
        say "offline build failed; trying with the network ..."
        build "" && built=1
    fi
    if [ "$built" -eq 1 ]; then
        BIN="$REPO/target/release/examples/gpu-inventory"
    else
        say "build failed (see check.log)"
    fi
fi
if [ "$built" -eq 0 ]; then
    if [ ! -x "$BIN" ]; then
        say "FAIL: no binary at $BIN (no cargo here, or the build failed)"
        say "      build it where cargo is: cargo build --release -p fleetform-gpu --no-default-features --example gpu-inventory"
        say "      and carry target/release/examples/gpu-inventory"
        exit 4
    fi
    say "using prebuilt $BIN"
fi

# Let the loader find NVML in the usual driver locations too.
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64:/usr/local/nvidia/lib"

SMI_QUERY=index,uuid,name,driver_version,memory.total,mig.mode.current,mig.mode.pending,ecc.mode.current,ecc.mode.pending,power.limit,persistence_mode
have_smi=0
if command -v nvidia-smi >/dev/null 2>&1; then
    have_smi=1
    nvidia-smi --query-gpu=$SMI_QUERY --format=csv,noheader >"$OUT/nvidia-smi.before.csv" 2>>"$LOG" || have_smi=0
fi

set +e
timeout 60 "$BIN" --format json --xid-poll-ms 500 >"$OUT/gpu-inventory.json" 2>"$OUT/gpu-inventory.stderr"
rc=$?
set -e
cat "$OUT/gpu-inventory.stderr" | tee -a "$LOG" >&2
if [ "$rc" -eq 3 ]; then
    say "NVML not available on this machine (exit 3); nothing to check"
    exit 3
elif [ "$rc" -ne 0 ]; then
    say "FAIL: gpu-inventory exited $rc"
    exit 1
fi
timeout 60 "$BIN" --format text --xid-poll-ms 0 >"$OUT/gpu-inventory.txt" 2>>"$LOG" || true
cat "$OUT/gpu-inventory.txt" | tee -a "$LOG"

if [ "$have_smi" -eq 1 ]; then
    nvidia-smi --query-gpu=$SMI_QUERY --format=csv,noheader >"$OUT/nvidia-smi.csv" 2>>"$LOG" || have_smi=0
fi

set +e
python3 - "$OUT/gpu-inventory.json" "$have_smi" "$OUT" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys, os

path, have_smi, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
inv = json.load(open(path))
fails = []

def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        fails.append(what)

check(inv.get("apiVersion") == "fleetform.dev/v1alpha1" and inv.get("kind") == "GpuInventory", "apiVersion/kind")
check(bool(inv.get("driverVersion")), f"driver version present ({inv.get('driverVersion')})")
check(bool(inv.get("nvmlVersion")), f"NVML version present ({inv.get('nvmlVersion')})")
check(bool(inv.get("cudaDriverVersion")), f"CUDA driver version present ({inv.get('cudaDriverVersion')})")
gpus = inv.get("gpus", [])
check(len(gpus) >= 1, f"{len(gpus)} GPU(s) reported")
for g in gpus:
    i = g.get("index")
    name = g.get("name", "")
    check("H100" in name or "H200" in name, f"GPU {i}: name {name!r} contains H100/H200")
    mem = g.get("memoryTotalBytes", 0)
    check(mem > 70 * 2**30, f"GPU {i}: memory {mem / 2**30:.1f} GiB > 70 GiB")
    check(str(g.get("uuid", "")).startswith("GPU-"), f"GPU {i}: uuid {g.get('uuid')!r} starts with GPU-")
    t = g.get("temperatureC")
    check(t is not None and 10 <= t <= 100, f"GPU {i}: temperature {t} C within 10-100")
    check(bool(g.get("pciBusId")), f"GPU {i}: PCI bus id {g.get('pciBusId')}")
    check("mig" in g, f"GPU {i}: MIG mode reported ({g.get('mig', {}).get('currentEnabled')})")
    check("ecc" in g, f"GPU {i}: ECC reported")
    p = g.get("powerDrawMw")
    check(p is not None and 0 < p < 2_000_000, f"GPU {i}: power draw {p} mW plausible")
    # Informational: optional fields and per-field errors.
    for k in ("remappedRows", "retiredPages", "nvlinks", "throttleReasons", "temperatureSlowdownC", "powerLimitMw"):
        print(f"info GPU {i}: {k} = {json.dumps(g.get(k))[:200]}")
    for e in g.get("errors", []):
        print(f"info GPU {i}: error {e}")
for e in inv.get("errors", []):
    print(f"info node error: {e}")

if have_smi:
    rows = [r.split(", ") for r in open(os.path.join(out, "nvidia-smi.csv")).read().strip().splitlines()]
    smi_uuids = sorted(r[1] for r in rows)
    check(smi_uuids == sorted(g.get("uuid") for g in gpus), "UUIDs match nvidia-smi")
    check(all(r[3] == inv.get("driverVersion") for r in rows), "driver version matches nvidia-smi")
    before = open(os.path.join(out, "nvidia-smi.before.csv")).read()
    after = open(os.path.join(out, "nvidia-smi.csv")).read()
    check(before == after, "MIG/ECC/power-limit/persistence settings unchanged by the collection")
else:
    print("info nvidia-smi not available: cross-checks skipped")

print(f"{len(fails)} check(s) failed" if fails else "all checks passed")
sys.exit(1 if fails else 0)
PY
py=${PIPESTATUS[0]}
set -e
exit "$py"
