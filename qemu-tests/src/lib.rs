//! QEMU VM test harness and scenarios
