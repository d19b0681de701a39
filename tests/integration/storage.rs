//! Storage conformance: the same cases against memory, local disk and a real S3 server.
//!
//! Everything above `storage` assumes every backend behaves alike (sorted recursive listing,
//! missing objects, atomic create-if-absent); this suite is where that is held, in the manner of
//! object_store's own integration suite. Each case gets a fresh, uniquely named location.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use lethe::error::{Error, exit};
use lethe::storage::Location;

use crate::common;

/// A fresh location on one backend, plus whatever must live as long as it.
struct Fixture {
    location: Location,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn memory(case: &str) -> Option<Fixture> {
    let url = format!("memory://{}", common::unique(case));
    Some(fixture(url, None))
}

fn local(case: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory that does not exist yet: the first write must create it.
    let url = format!("file://{}/{}/root", dir.path().display(), case);
    Some(fixture(url, Some(dir)))
}

fn s3(case: &str) -> Option<Fixture> {
    let url = common::s3_location(&format!("conformance/{}", common::unique(case)))?;
    Some(fixture(url, None))
}

fn fixture(url: String, dir: Option<tempfile::TempDir>) -> Fixture {
    let location = Location::parse(&url, Path::new("/nonexistent-base")).expect("parse location");
    Fixture {
        location,
        url,
        _dir: dir,
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn paths(loc: &Location, prefix: &str) -> Vec<String> {
    loc.list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.path)
        .collect()
}

async fn put_get_overwrite(f: Fixture) {
    let loc = &f.location;
    loc.put("a/b.txt", b("one")).await.unwrap();
    assert_eq!(loc.get("a/b.txt").await.unwrap(), b("one"));
    loc.put("a/b.txt", b("second")).await.unwrap();
    assert_eq!(loc.get("a/b.txt").await.unwrap(), b("second"));
    assert_eq!(loc.get_opt("a/b.txt").await.unwrap(), Some(b("second")));
    // Empty objects are objects too.
    loc.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(loc.get("empty").await.unwrap(), Bytes::new());
}

async fn list_recursive_sorted(f: Fixture) {
    let loc = &f.location;
    assert!(
        loc.list("").await.unwrap().is_empty(),
        "fresh location lists empty"
    );
    for (k, v) in [
        ("z.txt", "z"),
        ("a/2.txt", "22"),
        ("a/1.txt", "1"),
        ("a/b/c.txt", "ccc"),
        ("ab/x.txt", "x"),
    ] {
        loc.put(k, b(v)).await.unwrap();
    }
    let all = loc.list("").await.unwrap();
    let names: Vec<_> = all.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        names,
        ["a/1.txt", "a/2.txt", "a/b/c.txt", "ab/x.txt", "z.txt"]
    );
    let sizes: Vec<_> = all.iter().map(|i| i.size).collect();
    assert_eq!(sizes, [1, 2, 3, 1, 1]);
    assert_eq!(paths(loc, "a/").await, ["a/1.txt", "a/2.txt", "a/b/c.txt"]);
    // A string prefix, as on S3: `a` also matches `ab/`.
    assert_eq!(paths(loc, "a").await.len(), 4);
    assert_eq!(paths(loc, "a/b").await, ["a/b/c.txt"]);
    assert_eq!(paths(loc, "a/b/c.txt").await, ["a/b/c.txt"]);
    assert!(paths(loc, "missing/").await.is_empty());
    assert!(paths(loc, "a/missing/deeper/").await.is_empty());
}

async fn get_missing(f: Fixture) {
    let loc = &f.location;
    let err = loc.get("no/such/object.csv").await.unwrap_err();
    assert!(matches!(err, Error::InputMissing { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::NO_INPUT);
    let msg = err.to_string();
    assert!(msg.contains("no/such/object.csv"), "{msg}");
    assert!(msg.contains("hint:"), "{msg}");
    assert_eq!(loc.get_opt("no/such/object.csv").await.unwrap(), None);
    assert_eq!(loc.head("no/such/object.csv").await.unwrap(), None);
}

async fn put_if_absent_twice(f: Fixture) {
    let loc = &f.location;
    assert!(
        loc.put_if_absent("log/0001.json", b("first"))
            .await
            .unwrap()
    );
    assert!(
        !loc.put_if_absent("log/0001.json", b("second"))
            .await
            .unwrap()
    );
    assert_eq!(loc.get("log/0001.json").await.unwrap(), b("first"));
    // An object written by a plain put also blocks a create.
    loc.put("log/0002.json", b("plain")).await.unwrap();
    assert!(
        !loc.put_if_absent("log/0002.json", b("other"))
            .await
            .unwrap()
    );
    assert_eq!(loc.get("log/0002.json").await.unwrap(), b("plain"));
}

async fn put_if_absent_concurrent(f: Fixture) {
    let loc = Arc::new(f.location.clone());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let loc = Arc::clone(&loc);
            tokio::spawn(async move {
                let won = loc
                    .put_if_absent("log/commit.json", b(&format!("writer {i}")))
                    .await
                    .unwrap();
                (i, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, won) = task.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    let content = loc.get("log/commit.json").await.unwrap();
    assert_eq!(content, b(&format!("writer {}", winners[0])));
}

async fn delete(f: Fixture) {
    let loc = &f.location;
    loc.put("d/x", b("x")).await.unwrap();
    loc.put("d/y", b("y")).await.unwrap();
    loc.delete("d/x").await.unwrap();
    assert_eq!(loc.get_opt("d/x").await.unwrap(), None);
    assert_eq!(paths(loc, "").await, ["d/y"]);
    // Deleting what is gone is fine (retried cleanups converge).
    loc.delete("d/x").await.unwrap();
    loc.delete("never/existed").await.unwrap();
    // And a deleted key can be created again.
    assert!(loc.put_if_absent("d/x", b("again")).await.unwrap());
}

async fn child_locations(f: Fixture) {
    let loc = &f.location;
    let child = loc.child("tenant=acme/");
    assert_eq!(child.url(), format!("{}/tenant=acme", loc.url()));
    child.put("sub/f.csv", b("c")).await.unwrap();
    loc.put("top.csv", b("t")).await.unwrap();
    assert_eq!(loc.get("tenant=acme/sub/f.csv").await.unwrap(), b("c"));
    assert_eq!(paths(&child, "").await, ["sub/f.csv"]);
    assert_eq!(paths(loc, "").await, ["tenant=acme/sub/f.csv", "top.csv"]);
    let grandchild = child.child("sub");
    assert_eq!(paths(&grandchild, "").await, ["f.csv"]);
    // Parsing the URL again reaches the same objects (for memory://, the same store).
    let again = Location::parse(&f.url, Path::new("/")).unwrap();
    assert_eq!(again.get("top.csv").await.unwrap(), b("t"));
    let child_again = Location::parse(&child.url(), Path::new("/")).unwrap();
    assert_eq!(child_again.get("sub/f.csv").await.unwrap(), b("c"));
}

async fn head(f: Fixture) {
    let loc = &f.location;
    let before = chrono::Utc::now() - chrono::Duration::minutes(5);
    loc.put("h/x.parquet", b("12345")).await.unwrap();
    let info = loc.head("h/x.parquet").await.unwrap().expect("exists");
    assert_eq!(info.path, "h/x.parquet");
    assert_eq!(info.size, 5);
    assert!(info.last_modified > before, "{info:?}");
    let listed = loc.list("h/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, info.path);
    assert_eq!(listed[0].size, info.size);
}

/// One test per (backend, case), named `storage::<backend>::<case>`.
macro_rules! conformance {
    ($($backend:ident),* ; $cases:tt) => {
        $( conformance!(@backend $backend $cases); )*
    };
    (@backend $backend:ident [$($case:ident),*]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(fixture) = super::$backend(stringify!($case)) {
                        super::$case(fixture).await;
                    }
                }
            )*
        }
    };
}

conformance!(memory, local, s3; [
    put_get_overwrite,
    list_recursive_sorted,
    get_missing,
    put_if_absent_twice,
    put_if_absent_concurrent,
    delete,
    child_locations,
    head
]);

#[test]
fn s3_is_exercised_when_required() {
    // Guards against a CI run that silently skips the S3 cases.
    if common::s3_required() {
        assert!(common::s3_location("probe").is_some());
    }
}

/// The IAM-enforcing S3 server that `scripts/test.sh` starts (`scripts/s3_iam.py setup` made its
/// admin): endpoint and bucket, or `None` (test skips) without one.
fn iam_server() -> Option<(String, String)> {
    let var = |name: &str| std::env::var(format!("LETHE_TEST_S3_IAM_{name}")).ok();
    let Some(endpoint) = var("ENDPOINT").filter(|e| !e.is_empty()) else {
        assert!(
            !common::s3_required(),
            "LETHE_REQUIRE_S3=1 but LETHE_TEST_S3_IAM_ENDPOINT is not set; run the tests with scripts/test.sh"
        );
        eprintln!("skipping: no IAM-enforcing S3 server (scripts/test.sh starts one)");
        return None;
    };
    Some((endpoint, var("BUCKET").unwrap()))
}

/// A client of the IAM server with the given keys.
fn iam_client(
    endpoint: &str,
    bucket: &str,
    key: &str,
    secret: &str,
) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .build()
            .unwrap(),
    )
}

/// A new IAM user whose only permissions are what `lethe policy SPEC --for FOR` prints:
/// (access key, secret).
fn user_with_lethe_policy(endpoint: &str, spec: &str, what: &str, dir: &Path) -> (String, String) {
    let o = crate::pipeline::lethe(&["policy", spec, "--for", what], &[]);
    assert!(o.status.success(), "{}", crate::pipeline::text(&o));
    let file = dir.join(format!("policy-{what}.json"));
    std::fs::write(&file, &o.stdout).unwrap();
    let name = common::unique(&format!("lethe-{what}"));
    let script = crate::pipeline::repo().join("scripts/s3_iam.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["user", endpoint, &name])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = String::from_utf8(out.stdout).unwrap();
    let (key, secret) = keys.trim().split_once(' ').unwrap();
    (key.to_string(), secret.to_string())
}

/// The job runs with exactly the permissions `lethe policy` prints (`--for run` for run, verify
/// and export; `--for gc` for gc), on a server that enforces them: every command succeeds, and
/// the inputs are exactly as they were. The run's credentials are refused a delete or an
/// overwrite of an input (the server does enforce the policies, so this test can fail).
#[test]
fn the_printed_least_privilege_policies_run_the_job_and_protect_the_inputs() {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as ObjPath;

    let Some((endpoint, bucket)) = iam_server() else {
        return;
    };
    let admin = iam_client(
        &endpoint,
        &bucket,
        &std::env::var("LETHE_TEST_S3_IAM_ADMIN_KEY").unwrap(),
        &std::env::var("LETHE_TEST_S3_IAM_ADMIN_SECRET").unwrap(),
    );
    let prefix = common::unique("iam");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    crate::pipeline::small_sample(&data, 31);
    let rt = lethe::runtime::Runtime::new().unwrap();
    let inputs = |store: Arc<dyn object_store::ObjectStore>| {
        let prefix = prefix.clone();
        rt.block_on(async move {
            let mut all = Vec::new();
            for dir in ["exports", "ledger"] {
                let p = ObjPath::from(format!("{prefix}/{dir}"));
                let listed: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
                all.extend(
                    listed
                        .into_iter()
                        .map(|m| (m.location.to_string(), m.e_tag)),
                );
            }
            all.sort();
            all
        })
    };
    rt.block_on(async {
        for entry in crate::pipeline::walk(&data) {
            let rel = entry
                .strip_prefix(&data)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel.starts_with("backups/") {
                continue; // these commands do not read backups (the spec keeps them on disk)
            }
            let bytes = Bytes::from(std::fs::read(&entry).unwrap());
            admin
                .put(&ObjPath::from(format!("{prefix}/{rel}")), bytes.into())
                .await
                .unwrap();
        }
    });
    let before = inputs(admin.clone());
    assert!(before.len() > 10, "{before:?}");

    let base = format!("s3://{bucket}/{prefix}");
    let spec = crate::pipeline::write_pipeline(
        tmp.path(),
        &format!("{base}/exports"),
        &format!("{base}/ledger"),
        &format!("{base}/out"),
    );
    let spec = spec.to_str().unwrap();
    let run_keys = user_with_lethe_policy(&endpoint, spec, "run", tmp.path());
    let gc_keys = user_with_lethe_policy(&endpoint, spec, "gc", tmp.path());
    let env = |(key, secret): &(String, String)| {
        [
            ("AWS_ENDPOINT", endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", key.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.clone()),
        ]
    };
    let lethe_as = |keys: &(String, String), args: &[&str]| {
        let env = env(keys);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::pipeline::lethe(args, &env)
    };
    for args in [
        vec!["run", spec],
        vec!["verify", spec],
        vec!["export", spec],
    ] {
        let o = lethe_as(&run_keys, &args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            crate::pipeline::text(&o)
        );
    }
    let o = lethe_as(&gc_keys, &["gc", spec, "--grace", "0s"]);
    assert!(o.status.success(), "gc: {}", crate::pipeline::text(&o));
    assert_eq!(inputs(admin.clone()), before, "the inputs are untouched");
    let run_client = iam_client(&endpoint, &bucket, &run_keys.0, &run_keys.1);
    let written = rt.block_on(async {
        let p = ObjPath::from(format!("{prefix}/out"));
        run_client
            .list(Some(&p))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    assert!(
        written
            .iter()
            .any(|m| m.location.as_ref().contains("/_manifests/")),
        "the run committed manifests: {written:?}"
    );
    assert!(
        written
            .iter()
            .any(|m| m.location.as_ref().contains("/bundles/")),
        "the export wrote bundles"
    );

    // The policies are enforced: the run's credentials may not delete or overwrite an input.
    let input = ObjPath::from(before[0].0.as_str());
    rt.block_on(async {
        assert!(run_client.delete(&input).await.is_err(), "delete {input}");
        assert!(
            run_client
                .put(&input, Bytes::from_static(b"x").into())
                .await
                .is_err(),
            "overwrite {input}"
        );
    });
    assert_eq!(inputs(admin), before);
}
