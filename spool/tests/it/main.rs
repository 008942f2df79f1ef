//! The spool crate's integration tests, one binary: each module is one
//! behaviour of the public `Spool` API on a temporary directory. The tests
//! run on parallel threads, so none may rely on process-wide state.

mod common;

mod apply;
mod close;
mod compaction;
mod corruption;
mod crash;
mod group_commit;
mod ids;
mod large_bodies;
mod records;
mod store_and_scan;
