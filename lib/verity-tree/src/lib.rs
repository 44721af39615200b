//! dm-verity hash tree generator, byte-compatible with veritysetup format
