//! Device-mapper ioctls on /dev/mapper/control, hand-rolled from
//! `include/uapi/linux/dm-ioctl.h` (interface version 4): libdevmapper is C,
//! and the Rust `devicemapper` crate needs bindgen. Only what a read-only
//! verity device needs: DEV_CREATE, TABLE_LOAD, DEV_SUSPEND (resume) and
//! DEV_REMOVE for cleanup.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `sizeof(struct dm_ioctl)`: 3*4 version + 7*4 + 4 padding + 8 dev +
/// 128 name + 129 uuid + 7 data padding.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`: 8 + 8 + 4 + 4 + 16.
const TARGET_SPEC_SIZE: usize = 40;
const NAME_LEN: usize = 128;
const UUID_LEN: usize = 129;

const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const OFF_UUID: usize = OFF_NAME + NAME_LEN;

pub const DM_READONLY_FLAG: u32 = 1 << 0;

/// ioctl command numbers: `_IOWR(0xfd, nr, struct dm_ioctl)`; the generic
/// encoding, identical on x86_64 and aarch64.
const fn iowr(nr: u32) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (0xfd << 8) | nr
}
pub const DM_DEV_CREATE: u32 = iowr(3);
pub const DM_DEV_REMOVE: u32 = iowr(4);
pub const DM_DEV_SUSPEND: u32 = iowr(6);
pub const DM_TABLE_LOAD: u32 = iowr(9);

/// A `struct dm_ioctl` header for device `name`, with `extra` bytes of
/// payload room after it.
fn header(name: &str, flags: u32, extra: usize) -> Result<Vec<u8>, String> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') {
        return Err(format!("bad device-mapper name {name:?}"));
    }
    let size = DM_IOCTL_SIZE + extra;
    let mut b = vec![0u8; size];
    // Version 4.0.0: the kernel accepts any requested minor <= its own.
    b[0..4].copy_from_slice(&4u32.to_ne_bytes());
    put_u32(&mut b, OFF_DATA_SIZE, size_u32(size)?);
    put_u32(&mut b, OFF_DATA_START, size_u32(DM_IOCTL_SIZE)?);
    put_u32(&mut b, OFF_FLAGS, flags);
    b[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn size_u32(n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| "device-mapper request too large".to_string())
}

/// DM_DEV_CREATE request for `name` with `uuid`.
pub fn create_request(name: &str, uuid: &str) -> Result<Vec<u8>, String> {
    let mut b = header(name, 0, 0)?;
    if uuid.len() >= UUID_LEN {
        return Err(format!("device-mapper uuid {uuid:?} too long"));
    }
    b[OFF_UUID..OFF_UUID + uuid.len()].copy_from_slice(uuid.as_bytes());
    Ok(b)
}

/// DM_TABLE_LOAD request with a single target.
pub fn table_load_request(
    name: &str,
    readonly: bool,
    start: u64,
    length: u64,
    target_type: &str,
    params: &str,
) -> Result<Vec<u8>, String> {
    if target_type.is_empty() || target_type.len() >= 16 {
        return Err(format!("bad target type {target_type:?}"));
    }
    if params.contains('\0') {
        return Err("target parameters contain NUL".into());
    }
    // Params are NUL-terminated; the spec plus params are padded to 8 bytes
    // like libdevmapper does, so `next` points at an aligned (absent) spec.
    let spec_len = (TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    let flags = if readonly { DM_READONLY_FLAG } else { 0 };
    let mut b = header(name, flags, spec_len)?;
    put_u32(&mut b, OFF_TARGET_COUNT, 1);
    let s = DM_IOCTL_SIZE;
    b[s..s + 8].copy_from_slice(&start.to_ne_bytes());
    b[s + 8..s + 16].copy_from_slice(&length.to_ne_bytes());
    // s+16: status (out only), s+20: next
    put_u32(&mut b, s + 20, size_u32(spec_len)?);
    b[s + 24..s + 24 + target_type.len()].copy_from_slice(target_type.as_bytes());
    let p = s + TARGET_SPEC_SIZE;
    b[p..p + params.len()].copy_from_slice(params.as_bytes());
    Ok(b)
}

/// DM_DEV_SUSPEND without DM_SUSPEND_FLAG: resume, i.e. make the loaded
/// table live.
pub fn resume_request(name: &str) -> Result<Vec<u8>, String> {
    header(name, 0, 0)
}

/// DM_DEV_REMOVE request.
pub fn remove_request(name: &str) -> Result<Vec<u8>, String> {
    header(name, 0, 0)
}

/// The `dev` field of a reply, decoded (the kernel's `huge_encode_dev`,
/// i.e. `new_encode_dev`: minor low byte, major, then minor high bits).
pub fn reply_dev(reply: &[u8]) -> Option<(u32, u32)> {
    let raw = reply.get(OFF_DEV..OFF_DEV + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(raw);
    Some(decode_dev(u64::from_ne_bytes(a)))
}

pub fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// Issues one DM ioctl; `buf` receives the reply.
pub fn ioctl(control: &File, cmd: u32, buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: buf holds a struct dm_ioctl whose data_size equals buf.len(),
    // so the kernel reads and writes only within it.
    let r = unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            cmd as libc::Ioctl,
            buf.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Creates, loads and resumes a read-only single-target device; returns its
/// (major, minor). On failure the half-made device is removed again.
pub fn create_readonly(
    name: &str,
    uuid: &str,
    sectors: u64,
    target_type: &str,
    params: &str,
) -> Result<(u32, u32), String> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| format!("opening /dev/mapper/control: {e} (is dm_mod loaded?)"))?;
    let mut req = create_request(name, uuid)?;
    ioctl(&control, DM_DEV_CREATE, &mut req).map_err(|e| format!("DM_DEV_CREATE {name}: {e}"))?;
    let result = (|| {
        let mut req = table_load_request(name, true, 0, sectors, target_type, params)?;
        ioctl(&control, DM_TABLE_LOAD, &mut req)
            .map_err(|e| format!("DM_TABLE_LOAD {name} ({target_type} {params}): {e}"))?;
        let mut req = resume_request(name)?;
        ioctl(&control, DM_DEV_SUSPEND, &mut req)
            .map_err(|e| format!("DM_DEV_SUSPEND (resume) {name}: {e}"))?;
        reply_dev(&req).ok_or_else(|| "short DM reply".to_string())
    })();
    if result.is_err()
        && let Ok(mut req) = remove_request(name)
    {
        let _ = ioctl(&control, DM_DEV_REMOVE, &mut req);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // Values from strace of `dmsetup create` (DM_DEV_CREATE etc.).
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_DEV_REMOVE, 0xc138_fd04);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    #[test]
    fn create_request_layout() {
        let b = create_request("usr", "CAIRN-VERITY-usr").unwrap();
        assert_eq!(b.len(), 312);
        assert_eq!((u32_at(&b, 0), u32_at(&b, 4), u32_at(&b, 8)), (4, 0, 0));
        assert_eq!(u32_at(&b, OFF_DATA_SIZE), 312);
        assert_eq!(u32_at(&b, OFF_DATA_START), 312);
        assert_eq!(&b[48..52], b"usr\0");
        assert_eq!(&b[176..193], b"CAIRN-VERITY-usr\0");
        assert!(create_request("a/b", "").is_err());
        assert!(create_request("", "").is_err());
        assert!(create_request("x", &"u".repeat(129)).is_err());
    }

    #[test]
    fn table_load_layout() {
        let params = "1 254:2 254:2 4096 4096 300 301 sha256 ab - 1 panic_on_corruption";
        let b = table_load_request("usr", true, 0, 2400, "verity", params).unwrap();
        let spec_len = (40 + params.len() + 1).next_multiple_of(8);
        assert_eq!(b.len(), 312 + spec_len);
        assert_eq!(u32_at(&b, OFF_DATA_SIZE) as usize, b.len());
        assert_eq!(u32_at(&b, OFF_TARGET_COUNT), 1);
        assert_eq!(u32_at(&b, OFF_FLAGS), DM_READONLY_FLAG);
        assert_eq!(&b[312..320], &0u64.to_ne_bytes());
        assert_eq!(&b[320..328], &2400u64.to_ne_bytes());
        assert_eq!(u32_at(&b, 332) as usize, spec_len);
        assert_eq!(&b[336..343], b"verity\0");
        assert_eq!(&b[352..352 + params.len()], params.as_bytes());
        assert_eq!(b[352 + params.len()], 0);
        assert!(table_load_request("usr", true, 0, 1, "a-very-long-target", "").is_err());
    }

    #[test]
    fn dev_numbers_decode() {
        // new_encode_dev(MKDEV(254, 0)) and MKDEV(259, 300).
        assert_eq!(decode_dev(0xfe00), (254, 0));
        let enc = (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12);
        assert_eq!(decode_dev(enc), (259, 300));
        let mut reply = resume_request("usr").unwrap();
        reply[OFF_DEV..OFF_DEV + 8].copy_from_slice(&0xfe01u64.to_ne_bytes());
        assert_eq!(reply_dev(&reply), Some((254, 1)));
    }
}
