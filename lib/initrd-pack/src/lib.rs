//! initramfs packing: cpio newc writer and kernel module dependency closure
