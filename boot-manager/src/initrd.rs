//! Serves the verified initramfs to the kernel's EFI stub from memory through
//! the LINUX_EFI_INITRD_MEDIA_GUID device path + LoadFile2 protocol (Linux
//! 5.8+, x86 and arm64). The stub never opens a file itself, so nothing
//! unverified reaches the kernel.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use uefi::boot;
use uefi::proto::device_path::DevicePath;
use uefi::proto::device_path::build::{self, DevicePathBuilder};
use uefi::proto::media::load_file::LoadFile2;
use uefi::{Guid, Handle, Identify, Status, guid};

/// The vendor media GUID the Linux EFI stub looks for.
const LINUX_EFI_INITRD_MEDIA_GUID: Guid = guid!("5568e427-68fc-4f3d-ac74-ca555231cc68");

/// EFI_LOAD_FILE2_PROTOCOL, followed by our data. Firmware and the stub only
/// see the first field; `this` points at the whole struct.
#[repr(C)]
struct InitrdLoadFile2 {
    load_file: unsafe extern "efiapi" fn(
        this: *mut InitrdLoadFile2,
        file_path: *const c_void,
        boot_policy: u8,
        buffer_size: *mut usize,
        buffer: *mut c_void,
    ) -> Status,
    data: *const u8,
    len: usize,
}

/// LoadFile2.LoadFile: size query with a NULL or short buffer, then the copy.
unsafe extern "efiapi" fn load_initrd(
    this: *mut InitrdLoadFile2,
    _file_path: *const c_void,
    boot_policy: u8,
    buffer_size: *mut usize,
    buffer: *mut c_void,
) -> Status {
    if this.is_null() || buffer_size.is_null() {
        return Status::INVALID_PARAMETER;
    }
    // LoadFile2 never serves boot-option loads (UEFI spec 13.2).
    if boot_policy != 0 {
        return Status::UNSUPPORTED;
    }
    // SAFETY: `this` is the interface we installed, alive until uninstalled;
    // the caller owns `buffer_size` and, when non-null, `buffer` of that size.
    unsafe {
        let me = &*this;
        if buffer.is_null() || *buffer_size < me.len {
            *buffer_size = me.len;
            return Status::BUFFER_TOO_SMALL;
        }
        core::ptr::copy_nonoverlapping(me.data, buffer.cast::<u8>(), me.len);
        *buffer_size = me.len;
    }
    Status::SUCCESS
}

/// The installed protocols; dropping uninstalls them. The initrd buffer
/// must outlive this (the borrow enforces it).
pub struct InitrdProvider<'a> {
    handle: Handle,
    path: *mut [u8],
    proto: *mut InitrdLoadFile2,
    _data: core::marker::PhantomData<&'a [u8]>,
}

#[derive(Debug)]
pub enum InstallError {
    /// Another handle already answers for the initrd device path; the stub
    /// might read its (unverified) initrd instead of ours.
    AlreadyProvided,
    Firmware(Status),
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::AlreadyProvided => f.write_str("another initrd provider is installed"),
            InstallError::Firmware(s) => write!(f, "cannot install the initrd protocol: {s:?}"),
        }
    }
}

fn vendor_path(buf: &mut [MaybeUninit<u8>]) -> Option<&DevicePath> {
    DevicePathBuilder::with_buf(buf)
        .push(&build::media::Vendor {
            vendor_guid: LINUX_EFI_INITRD_MEDIA_GUID,
            vendor_defined_data: &[],
        })
        .ok()?
        .finalize()
        .ok()
}

impl<'a> InitrdProvider<'a> {
    pub fn install(initrd: &'a [u8]) -> Result<InitrdProvider<'a>, InstallError> {
        let mut buf = [MaybeUninit::uninit(); 64];
        let path = vendor_path(&mut buf).ok_or(InstallError::Firmware(Status::BUFFER_TOO_SMALL))?;
        let mut probe = path;
        if boot::locate_device_path::<LoadFile2>(&mut probe).is_ok() {
            return Err(InstallError::AlreadyProvided);
        }
        // Boxed so the addresses handed to the firmware stay put.
        let path: *mut [u8] = Box::into_raw(Vec::from(path.as_bytes()).into_boxed_slice());
        let proto = Box::into_raw(Box::new(InitrdLoadFile2 {
            load_file: load_initrd,
            data: initrd.as_ptr(),
            len: initrd.len(),
        }));
        // SAFETY: both interfaces are valid for the protocol GUIDs they are
        // installed under and live until uninstalled in Drop.
        let handle = match unsafe {
            boot::install_protocol_interface(
                None,
                &DevicePath::GUID,
                path.cast::<u8>().cast::<c_void>(),
            )
        } {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: not installed anywhere, so we still own both boxes.
                unsafe {
                    drop(Box::from_raw(path));
                    drop(Box::from_raw(proto));
                }
                return Err(InstallError::Firmware(e.status()));
            }
        };
        // SAFETY: as above.
        if let Err(e) = unsafe {
            boot::install_protocol_interface(Some(handle), &LoadFile2::GUID, proto.cast::<c_void>())
        } {
            // SAFETY: the device path was installed just above by us.
            let removed = unsafe {
                boot::uninstall_protocol_interface(
                    handle,
                    &DevicePath::GUID,
                    path.cast::<u8>().cast::<c_void>(),
                )
            };
            // SAFETY: never installed, or uninstalled: ours again. If the
            // uninstall failed the path memory is leaked on purpose, since the
            // firmware still points at it.
            unsafe {
                drop(Box::from_raw(proto));
                if removed.is_ok() {
                    drop(Box::from_raw(path));
                }
            }
            return Err(InstallError::Firmware(e.status()));
        }
        Ok(InitrdProvider {
            handle,
            path,
            proto,
            _data: core::marker::PhantomData,
        })
    }
}

impl Drop for InitrdProvider<'_> {
    fn drop(&mut self) {
        // SAFETY: these exact interfaces were installed on this handle by
        // `install`. Memory the firmware may still reference is leaked.
        unsafe {
            if boot::uninstall_protocol_interface(
                self.handle,
                &LoadFile2::GUID,
                self.proto.cast::<c_void>(),
            )
            .is_ok()
            {
                drop(Box::from_raw(self.proto));
            }
            if boot::uninstall_protocol_interface(
                self.handle,
                &DevicePath::GUID,
                self.path.cast::<u8>().cast(),
            )
            .is_ok()
            {
                drop(Box::from_raw(self.path));
            }
        }
    }
}
