//! Helpers shared by the integration tests: backend selection for the S3 server, unique names.
//!
//! The S3 backend is a real S3 API (moto, started by `scripts/test.sh`), found through
//! `LETHE_TEST_S3_ENDPOINT` and `LETHE_TEST_S3_BUCKET`; without them S3 tests skip, unless
//! `LETHE_REQUIRE_S3=1` says they must run (as in CI), in which case they fail.

#![allow(dead_code)] // each test module uses its own subset

use std::sync::Once;

/// The bucket used when `LETHE_TEST_S3_BUCKET` is not set.
pub const DEFAULT_BUCKET: &str = "lethe-test";

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(name: &str) -> String {
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}-{}", &short[..12])
}

/// Whether S3 tests must run rather than skip.
pub fn s3_required() -> bool {
    std::env::var("LETHE_REQUIRE_S3").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// An `s3://bucket/prefix` URL on the test S3 server, with the `AWS_*` variables object_store
/// reads set up for it; `None` (test skips) when no server is configured.
///
/// Panics, failing the test, when `LETHE_REQUIRE_S3=1` and no endpoint is set.
pub fn s3_location(prefix: &str) -> Option<String> {
    let endpoint = std::env::var("LETHE_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        assert!(
            !s3_required(),
            "LETHE_REQUIRE_S3=1 but LETHE_TEST_S3_ENDPOINT is not set; run the tests with scripts/test.sh"
        );
        eprintln!("skipping S3 test: LETHE_TEST_S3_ENDPOINT is not set (scripts/test.sh sets it)");
        return None;
    };
    let bucket = std::env::var("LETHE_TEST_S3_BUCKET")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| DEFAULT_BUCKET.to_owned());
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        let mut vars = vec![("AWS_ENDPOINT", endpoint.clone())];
        if endpoint.starts_with("http://") {
            vars.push(("AWS_ALLOW_HTTP", "true".to_owned()));
        }
        for (key, default) in [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ] {
            if std::env::var_os(key).is_none() {
                vars.push((key, default.to_owned()));
            }
        }
        for (key, value) in vars {
            // SAFETY: set once, before the first S3 location of this process is built, and
            // only where scripts/test.sh has not already exported the same value. Rust's own
            // env accesses are serialised; no test thread reads these from C.
            unsafe { std::env::set_var(key, value) };
        }
    });
    Some(format!("s3://{bucket}/{}", prefix.trim_matches('/')))
}
