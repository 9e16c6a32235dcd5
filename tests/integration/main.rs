//! The integration suite: one test binary that runs the real `wqm` binary.

mod fixtures;
mod info;
mod list;
mod surface;
mod test;
mod validate;
