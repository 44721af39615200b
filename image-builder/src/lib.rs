//! The parts of cairn-build that tests and other tools use as a library.

pub mod board;
