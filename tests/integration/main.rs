//! The integration suite: one test binary that runs the real `wqm` binary.

mod create;
mod docs;
mod fixtures;
mod hostile;
mod info;
mod list;
mod operations;
mod prune;
mod qdrant_double;
mod real_cluster;
mod real_qdrant;
mod real_server;
mod restore;
mod surface;
mod test;
mod validate;
