#!/bin/sh
# cairn-boot under QEMU with real firmware (OVMF / AAVMF) and a real kernel.
# usage: boot-manager/smoke/smoke.sh <x86_64|arm64> <vmlinuz (EFI stub)> [workdir]
# Needs qemu-system-*, OVMF/AAVMF, sgdisk, cgpt, mkfs.fat, mtools, python3.
# Checks: tries count down per boot and A takes over at 0; a slot whose files
# fail the signature is refused, marked failed and A boots; nothing bootable
# or no built-in key halts without resetting; the kernel runs the served initrd.
set -eu
arch=$1 kernel=$2 work=${3:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/../../target}
case $arch in
  x86_64) triple=x86_64-unknown-uefi musl=x86_64-unknown-linux-musl link= ;;
  arm64) triple=aarch64-unknown-uefi musl=aarch64-unknown-linux-musl link="-C linker=rust-lld" ;;
  *) echo "arch must be x86_64 or arm64" >&2; exit 2 ;;
esac
cargo build -q -p cairn-boot --target $triple --release
cargo build -q -p cairn-boot --example esp-kit
efi=$CARGO_TARGET_DIR/$triple/release/cairn-boot.efi kit=$CARGO_TARGET_DIR/debug/examples/esp-kit
# shellcheck disable=SC2086 # $link is zero or two words
rustc --edition 2021 --target $musl -C opt-level=s -C panic=abort $link -C strip=symbols \
  "$here/init.rs" -o "$work/init"

boot() { # disk log timeout
  if [ $arch = x86_64 ]; then
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
    timeout "$3" qemu-system-x86_64 -machine q35 -accel tcg -m 768 -nodefaults -display none -no-reboot \
      -serial stdio -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
      -drive if=pflash,format=raw,file="$work/vars.fd" -drive file="$1",format=raw,if=virtio >"$2" 2>&1 || true
  else
    cp /usr/share/AAVMF/AAVMF_VARS.fd "$work/vars.fd"
    timeout "$3" qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg -m 1024 -nodefaults -display none \
      -no-reboot -serial stdio -drive if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd \
      -drive if=pflash,format=raw,file="$work/vars.fd" \
      -drive if=none,id=d0,file="$1",format=raw -device virtio-blk-pci,drive=d0 >"$2" 2>&1 || true
  fi
}
fails=0 passes=0
pass() { echo "PASS $1"; passes=$((passes + 1)); }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { # log pattern what
  if grep -aq -- "$2" "$1"; then pass "$3"; else fail "$3 (no '$2' in $1)"; fi
}
attr() { cgpt show -i "$2" "-$3" "$1"; }
disk() { # name options...
  name=$1
  shift
  python3 "$here/mkdisk.py" $arch "$efi" "$kernel" "$work/init" "$kit" "$work/$name.img" "$@" >/dev/null
}

disk good
for n in 1 2 3; do
  boot "$work/good.img" "$work/good$n.log" 300
  check "$work/good$n.log" "cairn-boot: slot b chosen: highest priority bootable (prio 2 tries $((4 - n)) ok 0 -> prio 2 tries $((3 - n)) ok 0)" "boot $n: b chosen, try counted"
  check "$work/good$n.log" "cairn.slot=b cairn.usr=aaaaaaaa-0000-0000-0000-000000000003" "boot $n: slot keys on the kernel command line"
  check "$work/good$n.log" "Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path" "boot $n: stub took the served initrd"
  check "$work/good$n.log" "Run /init as init process" "boot $n: kernel ran /init"
  if [ "$(attr "$work/good.img" 3 T)" = $((3 - n)) ]; then pass "boot $n: cgpt reads tries $((3 - n))"; else fail "boot $n: cgpt tries"; fi
done
if sgdisk -v "$work/good.img" | grep -q "No problems found"; then pass "sgdisk -v clean"; else fail "sgdisk -v"; fi
boot "$work/good.img" "$work/good4.log" 300
check "$work/good4.log" "cairn-boot: slot b not bootable: no tries left" "boot 4: b out of tries"
check "$work/good4.log" "cairn-boot: starting slot a" "boot 4: fallback to a"

disk tamper tamper-b
boot "$work/tamper.img" "$work/tamper.log" 300
check "$work/tamper.log" "cairn-boot: slot b refused: boot.sig does not match" "tampered b refused"
check "$work/tamper.log" "cairn.slot=a" "tampered b: a started"
if [ "$(attr "$work/tamper.img" 3 P)" = 0 ]; then pass "tampered b has priority 0"; else fail "tampered b priority"; fi

disk halt tamper-b missing-a
boot "$work/halt.img" "$work/halt.log" 90
check "$work/halt.log" "cairn-boot: no slot can boot" "nothing bootable: halts"

disk nokeys nokeys
boot "$work/nokeys.img" "$work/nokeys.log" 90
check "$work/nokeys.log" "cairn-boot: no trusted keys are built in" "no key built in: halts"
if [ "$(attr "$work/nokeys.img" 3 T)" = 3 ]; then pass "no key: no try consumed"; else fail "no key: tries"; fi

echo "smoke $arch: $passes passed, $fails failed (logs in $work)"
[ $fails = 0 ]
