//! The integration suite: one test binary that runs the real `wqm` binary.

mod create;
mod crypto;
mod docs;
mod faults;
mod fixtures;
mod hostile;
mod incremental;
mod info;
mod list;
mod operations;
mod prune;
mod pty;
mod qdrant_double;
mod real_cluster;
mod real_qdrant;
mod real_server;
mod restore;
mod sample;
mod seed;
mod store_lock;
mod surface;
mod terminal;
mod test;
mod validate;
