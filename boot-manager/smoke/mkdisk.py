#!/usr/bin/env python3
"""Test disk for cairn-boot: GPT (ESP, USR-A, USR-B) + FAT ESP with the boot
manager, a test key embedded, and signed boot files for slots a and b.
A(1,0,1) B(2,3,0): "B written, not yet booted".
usage: mkdisk.py <x86_64|arm64> <efi> <kernel> <init> <esp-kit> <out.img> [options]
options: tamper-b (B's cmdline changed after signing), tamper-a (A's initrd),
missing-a (no boot.sig for A), nokeys (no key embedded), torn-primary."""
import os, struct, subprocess, sys, tempfile

arch, efi, kernel, init, KIT, out = sys.argv[1:7]
opts = sys.argv[7:]
tamper = "tamper-b" in opts
SEED = "07" * 32  # test-only key
ESP_MIB = 40 if arch == "x86_64" else 90
USR = {"x86_64": "8484680c-9521-48c6-9c11-b0720656f69e", "arm64": "b0e01050-ee5f-4390-949a-9101b17104e9"}[arch]
LOADER = {"x86_64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}[arch]
CONSOLE = {"x86_64": "console=ttyS0", "arm64": "console=ttyAMA0"}[arch]

def run(*a):
    subprocess.run(a, check=True, stdout=subprocess.DEVNULL)

def cpio(files):
    """newc archive; files: list of (name, mode, data, rdev major, minor)."""
    out = b""
    for ino, (name, mode, data, maj, mnr) in enumerate(files + [("TRAILER!!!", 0, b"", 0, 0)], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, maj, mnr, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out + b"\0" * (-len(out) % 512)

tmp = tempfile.mkdtemp()
initrd = cpio([("dev", 0o40755, b"", 0, 0), ("dev/console", 0o20600, b"", 5, 1),
               ("proc", 0o40755, b"", 0, 0), ("init", 0o100755, open(init, "rb").read(), 0, 0)])
for slot in "ab":
    d = os.path.join(tmp, slot); os.mkdir(d)
    open(os.path.join(d, "vmlinuz"), "wb").write(open(kernel, "rb").read())
    open(os.path.join(d, "initrd"), "wb").write(initrd)
    open(os.path.join(d, "cmdline"), "w").write(f"{CONSOLE} panic=-1 loglevel=7 testslot={slot}")
    run(KIT, "sign", d, SEED)
if tamper:
    # Signed, then changed: the boot manager must refuse slot b.
    open(os.path.join(tmp, "b", "cmdline"), "a").write(" init=/bin/sh")
if "tamper-a" in opts:
    open(os.path.join(tmp, "a", "initrd"), "ab").write(b"x")
if "missing-a" in opts:
    os.unlink(os.path.join(tmp, "a", "boot.sig"))
bm = os.path.join(tmp, LOADER)
if "nokeys" in opts:
    open(bm, "wb").write(open(efi, "rb").read())
else:
    run(KIT, "embed", efi, bm, SEED)

esp = os.path.join(tmp, "esp.img")
run("mkfs.fat", "-F", "32", "-C", esp, str(ESP_MIB * 1024))
run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/cairn", "::/cairn/a", "::/cairn/b")
run("mcopy", "-i", esp, bm, "::/EFI/BOOT/" + LOADER)
for slot in "ab":
    for f in ("vmlinuz", "initrd", "cmdline", "boot.sig"):
        if os.path.exists(os.path.join(tmp, slot, f)):
            run("mcopy", "-i", esp, os.path.join(tmp, slot, f), f"::/cairn/{slot}/{f}")

if os.path.exists(out): os.unlink(out)
with open(out, "wb") as f: f.truncate((ESP_MIB + 24) << 20)
run("sgdisk", "-U", "11111111-2222-3333-4444-555555555555",
    "-n", f"1:2048:+{ESP_MIB}M", "-t", "1:EF00", "-c", "1:ESP", "-u", "1:aaaaaaaa-0000-0000-0000-000000000001",
    "-n", "2:0:+8M", "-t", f"2:{USR}", "-c", "2:USR-A", "-u", "2:aaaaaaaa-0000-0000-0000-000000000002",
    "-n", "3:0:+8M", "-t", f"3:{USR}", "-c", "3:USR-B", "-u", "3:aaaaaaaa-0000-0000-0000-000000000003", out)
run("cgpt", "add", "-i", "2", "-P", "1", "-T", "0", "-S", "1", out)
run("cgpt", "add", "-i", "3", "-P", "2", "-T", "3", "-S", "0", out)
with open(out, "r+b") as f, open(esp, "rb") as e:
    f.seek(2048 * 512); f.write(e.read())
if "torn-primary" in opts:
    with open(out, "r+b") as f:
        f.seek(2 * 512 + 128 + 60); f.write(b"\xff")  # inside the USR-A entry name: array CRC breaks
print(out)
