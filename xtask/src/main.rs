//! Project chores: test, vmtest, bench, image
fn main() {}
