//! Encryption at rest: files cannot be read without the key (by lethe or a plain Parquet
//! reader), wrong or missing keys fail cleanly before anything is written, crypto-shredding one
//! tenant leaves the others readable, holds refuse shredding.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::pipeline::{Setup, lethe, small_sample, text, walk, write_pipeline};

const KEY: &str = "0001020304050607080910111213141516171819202122232425262728293031";
const OTHER: &str = "ff01020304050607080910111213141516171819202122232425262728293031";

/// The shared sample with encryption at rest configured.
fn setup(seed: u64) -> Setup {
    let s = crate::pipeline::setup(seed);
    let mut text = std::fs::read_to_string(&s.spec).unwrap();
    text.push_str(&format!(
        "\nencryption:\n  master_key_env: LETHE_TEST_MASTER_KEY\n  keystore: {}\n",
        s.dir.join("keystore").display()
    ));
    std::fs::write(&s.spec, text).unwrap();
    s
}

fn snapshot_files(out: &Path, tenant: Option<&str>) -> Vec<PathBuf> {
    walk(&out.join("tenants"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .filter(|p| tenant.is_none_or(|t| p.to_string_lossy().contains(&format!("/tenants/{t}/"))))
        .collect()
}

fn tenants(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("exports/tenants/tenants.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn encrypted_snapshots_backups_and_key_errors() {
    let s = setup(51);
    let spec = s.spec.to_str().unwrap();
    let env = [("LETHE_TEST_MASTER_KEY", KEY)];
    let o = lethe(&["run", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
    let files = snapshot_files(&s.dir.join("out"), None);
    assert!(!files.is_empty());
    for f in &files {
        let b = std::fs::read(f).unwrap();
        assert_eq!(&b[b.len() - 4..], b"PARE", "{} is encrypted", f.display());
        // A plain Parquet reader cannot read it.
        assert!(
            ParquetReader::new(std::fs::File::open(f).unwrap())
                .finish()
                .is_err()
        );
    }
    // The keystore holds wrapped keys only: no key bytes in clear.
    for k in walk(&s.dir.join("keystore")) {
        let t = std::fs::read_to_string(&k).unwrap();
        assert!(t.contains("AES-256-GCM") && !t.contains(KEY));
    }
    let o = lethe(&["verify", spec], &env);
    assert!(
        o.status.success(),
        "lethe reads its encrypted files: {}",
        text(&o)
    );
    let o = lethe(&["backups", spec, "--as-of", "2026-11-29"], &env);
    assert!(o.status.success(), "{}", text(&o));
    let rewritten: Vec<PathBuf> = walk(&s.dir.join("backups"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".lethe-"))
        .collect();
    assert!(!rewritten.is_empty());
    for f in &rewritten {
        let b = std::fs::read(f).unwrap();
        assert_eq!(&b[b.len() - 4..], b"PARE");
    }
    let o = lethe(
        &["verify", spec, "--backups", "--as-of", "2026-11-29"],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));

    // Something new to do, then a wrong key and a missing key: exit 78, nothing written.
    let t = &tenants(&s.data)[0];
    std::fs::write(
        s.data.join("ledger/late.csv"),
        format!("request_id,tenant_id,kind,identifier_kind,identifier,received_at,field,value\nL-1,{t},erase,contact_id,C-10003,2026-11-28T00:00:00Z,,\n"),
    )
    .unwrap();
    let before = walk(&s.dir.join("out"));
    let o = lethe(&["run", spec], &[("LETHE_TEST_MASTER_KEY", OTHER)]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tenant"),
        "{}",
        text(&o)
    );
    let o = lethe(&["run", spec], &[]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert_eq!(walk(&s.dir.join("out")), before, "nothing written");
    let o = lethe(&["run", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn shredding_one_tenant_leaves_the_others_readable() {
    let s = setup(52);
    let spec = s.spec.to_str().unwrap();
    let env = [("LETHE_TEST_MASTER_KEY", KEY)];
    let o = lethe(&["run", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
    let ts = tenants(&s.data);
    let (victim, other) = (&ts[0], &ts[1]);

    // Refused while a hold covers the tenant.
    let holds = s.dir.join("held-holds.yaml");
    std::fs::write(
        &holds,
        format!("- id: H-1\n  reason: audit\n  tenant: {victim}\n"),
    )
    .unwrap();
    let spec_text = std::fs::read_to_string(&s.spec).unwrap();
    let held_spec = s.dir.join("held.yaml");
    std::fs::write(
        &held_spec,
        spec_text.replace(
            &s.dir.join("holds.yaml").display().to_string(),
            &holds.display().to_string(),
        ),
    )
    .unwrap();
    let o = lethe(
        &[
            "shred",
            held_spec.to_str().unwrap(),
            "--tenant",
            victim,
            "--yes",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("H-1"),
        "{}",
        text(&o)
    );

    let o = lethe(&["shred", spec, "--tenant", victim], &env);
    assert_eq!(o.status.code(), Some(64), "needs --yes: {}", text(&o));
    // Invoices are kept 10 years under a legal obligation: shredding needs an explicit override.
    let o = lethe(&["shred", spec, "--tenant", victim, "--yes"], &env);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("legal obligation"),
        "{}",
        text(&o)
    );
    let o = lethe(
        &[
            "shred",
            spec,
            "--tenant",
            victim,
            "--yes",
            "--despite-legal-retention",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));

    // The victim's files cannot be read by lethe any more; the other tenant's can.
    let victim_file = snapshot_files(&s.dir.join("out"), Some(victim))
        .pop()
        .unwrap();
    let other_file = snapshot_files(&s.dir.join("out"), Some(other))
        .pop()
        .unwrap();
    let rt = lethe::runtime::Runtime::new().unwrap();
    // In this process the key comes from a key file (no environment variables shared with
    // the tests running beside this one).
    let key_file = s.dir.join("master.key");
    std::fs::write(&key_file, KEY).unwrap();
    let file_spec = s.dir.join("file-key.yaml");
    std::fs::write(
        &file_spec,
        std::fs::read_to_string(&s.spec).unwrap().replace(
            "master_key_env: LETHE_TEST_MASTER_KEY",
            &format!("master_key_file: {}", key_file.display()),
        ),
    )
    .unwrap();
    let p = std::sync::Arc::new(lethe::spec::load(&file_spec).unwrap());
    let ctx = rt
        .block_on(lethe::exec::Context::open(p, &lethe::report::Silent))
        .unwrap();
    assert!(ctx.shredded.contains(victim.as_str()));
    let read = |f: &Path| {
        lethe::parquet_io::read_parquet(
            bytes::Bytes::from(std::fs::read(f).unwrap()),
            &f.display().to_string(),
        )
    };
    let err = read(&victim_file).unwrap_err();
    assert_eq!(err.exit_code(), 78, "{err}");
    assert!(read(&other_file).is_ok());

    // The run skips the shredded tenant; verify passes for the others; gc removes its files.
    let o = lethe(&["run", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["verify", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
    let o = lethe(&["gc", spec, "--grace", "0s"], &env);
    assert!(o.status.success(), "{}", text(&o));
    assert!(snapshot_files(&s.dir.join("out"), Some(victim)).is_empty());
    assert!(!snapshot_files(&s.dir.join("out"), Some(other)).is_empty());
    let o = lethe(&["evidence", "verify", spec], &env);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bundles_can_be_delivered_as_encrypted_zips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    small_sample(&data, 53);
    let spec = write_pipeline(
        dir,
        &data.join("exports").display().to_string(),
        &data.join("ledger").display().to_string(),
        &dir.join("out").display().to_string(),
    );
    let pass = dir.join("passphrases");
    let text = std::fs::read_to_string(&spec).unwrap().replacen(
        "policies:\n",
        &format!(
            "policies:\n  bundles: {{ encrypt_zip: true, passphrases: {} }}\n",
            pass.display()
        ),
        1,
    );
    std::fs::write(&spec, text).unwrap();
    let spec = spec.to_str().unwrap();
    let o = lethe(&["run", spec], &[]);
    assert!(o.status.success(), "{}", text_of(&o));
    let o = lethe(&["export", spec], &[]);
    assert!(o.status.success(), "{}", text_of(&o));
    let zips: Vec<PathBuf> = walk(&dir.join("out"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    assert!(!zips.is_empty(), "bundles were written");
    for z in &zips {
        let folder = z.with_extension("");
        // Only the README and the manifest sit in the clear; the person's data is in the zip.
        let names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "README.md" || n == "manifest.json"),
            "{names:?}"
        );
        let tenant = z
            .to_string_lossy()
            .split("/tenants/")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let pw_file = pass.join(format!(
            "tenant={tenant}/{}.txt",
            folder.file_name().unwrap().to_string_lossy()
        ));
        let pw = std::fs::read_to_string(&pw_file)
            .unwrap_or_else(|_| panic!("passphrase at {}", pw_file.display()));
        let mut archive = ::zip::ZipArchive::new(std::fs::File::open(z).unwrap()).unwrap();
        let name = (0..archive.len())
            .filter_map(|i| {
                archive
                    .name_for_index(i)
                    .and_then(|n| n.ok())
                    .map(|n| n.to_string())
            })
            .find(|n| n.ends_with(".jsonl"))
            .unwrap();
        assert!(
            archive.by_name(&name).is_err(),
            "entries cannot be read without the passphrase"
        );
        let mut f = archive
            .by_name_decrypt(&name, pw.trim().as_bytes())
            .unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    }
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}
