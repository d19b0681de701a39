//! The one integration test binary: storage conformance on every backend, the CLI contract,
//! and end-to-end pipeline runs (local disk and the S3 server started by scripts/test.sh).

mod audit;
mod backups;
mod bundles;
mod cli;
mod common;
mod encryption;
mod evidence;
mod pipeline;
mod residency;
mod shards;
mod storage;
