#!/bin/sh
# Test equipment: what the stand-in kubelet saw when it started, one JSON line per start.
env=$(systemctl show --property=Environment --value nvidia-mig-manager.service 2>/dev/null)
config=$(printf '%s\n' $env | sed -n 's/^MIG_PARTED_SELECTED_CONFIG=//p')
file=$(printf '%s\n' $env | sed -n 's/^MIG_PARTED_CONFIG_FILE=//p')
rc=none
if [ -n "$config" ] && [ -n "$file" ]; then
    nvidia-mig-parted assert -f "$file" -c "$config" >/dev/null 2>&1
    rc=$?
fi
devices=$(nvidia-smi -L 2>/dev/null | grep -c '^  MIG ')
unit=$(systemctl show --property=ActiveState,Result --value nvidia-mig-manager.service | tr '\n' ' ')
boot=$(cut -d' ' -f22 /proc/1/stat)
mkdir -p /var/lib/kubelet-standin
printf '{"boot": %s, "uptime": "%s", "config": "%s", "assert_rc": "%s", "mig_devices": %s, "mig_unit": "%s"}\n' \
    "$boot" "$(cut -d' ' -f1 /proc/uptime)" "$config" "$rc" "$devices" "$unit" >> /var/lib/kubelet-standin/starts.jsonl
