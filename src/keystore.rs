//! Encryption at rest: envelope encryption with one data key per tenant, and crypto-shredding.
//!
//! Each tenant gets its own random 256-bit data key. It is stored only wrapped (AES-256-GCM with
//! the tenant id as associated data) by the pipeline's master key, which comes from an environment
//! variable or a key file and never from the spec. Snapshot, rewritten backup and bundle Parquet
//! files are written with Parquet modular encryption under the tenant's data key; their footer
//! carries only the key's id. Destroying a tenant's wrapped key (`lethe shred`) makes every file
//! ever written under it unreadable by anyone: crypto-shredding.
//!
//! Readers anywhere in lethe decrypt transparently: keys loaded for a run are registered in a
//! process-wide keyring that the Parquet readers consult by key id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::Pipeline;
use crate::storage::Location;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Keys loaded in this process, by key id. Never logged, never serialized.
static KEYRING: RwLock<Option<HashMap<String, [u8; 32]>>> = RwLock::new(None);

fn register(id: &str, key: [u8; 32]) {
    if let Ok(mut k) = KEYRING.write() {
        k.get_or_insert_with(HashMap::new)
            .insert(id.to_string(), key);
    }
}

/// The data key with this id, if this process loaded it.
pub fn lookup(id: &str) -> Option<[u8; 32]> {
    KEYRING.read().ok()?.as_ref()?.get(id).copied()
}

fn forget(id: &str) {
    if let Ok(mut k) = KEYRING.write()
        && let Some(m) = k.as_mut()
    {
        m.remove(id);
    }
}

/// A tenant's data key. `Debug` never shows the key.
#[derive(Clone)]
pub struct DataKey {
    pub id: String,
    pub key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A wrapped data key as stored in the keystore (no secret in clear).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrappedKey {
    pub key_id: String,
    pub tenant: String,
    pub algorithm: String,
    pub nonce: String,
    pub wrapped: String,
    pub created_at: String,
}

/// The record left when a tenant's keys were destroyed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shredded {
    pub tenant: String,
    pub shredded_at: String,
    pub key_ids: Vec<String>,
}

pub struct Keystore {
    location: Location,
    master: [u8; 32],
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("location", &self.location.url())
            .finish_non_exhaustive()
    }
}

fn key_error(
    tenant: &str,
    path: Option<String>,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> Error {
    Error::Key {
        tenant: tenant.to_string(),
        path,
        message: message.into(),
        hint: hint.into(),
    }
}

/// Decodes a 32-byte key written as 64 hex digits or base64.
fn decode_master(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = hex::decode(t).ok().or_else(|| B64.decode(t).ok())?;
    bytes.try_into().ok()
}

impl Keystore {
    /// The pipeline's keystore, or `None` when the pipeline does not encrypt.
    pub fn open(p: &Pipeline) -> Result<Option<Keystore>> {
        let Some(enc) = &p.encryption else {
            return Ok(None);
        };
        let text = match (&enc.master_key_env, &enc.master_key_file) {
            (Some(var), _) if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) => {
                std::env::var(var).unwrap_or_default()
            }
            (_, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
                Error::config(
                    format!("cannot read the master key file {file}: {e}"),
                    "check `encryption.master_key_file` and its permissions",
                )
            })?,
            (Some(var), None) => {
                return Err(Error::config(
                    format!("the master key variable ${var} is not set"),
                    "export the 32-byte master key (64 hex digits, e.g. `openssl rand -hex 32`) from your secret store",
                ));
            }
            (None, None) => {
                return Err(Error::config(
                    "encryption needs a master key",
                    "set `encryption.master_key_env` or `encryption.master_key_file`",
                ));
            }
        };
        let master = decode_master(&text).ok_or_else(|| {
            Error::config(
                "the master key is not 32 bytes (64 hex digits or base64)",
                "generate one with `openssl rand -hex 32`",
            )
        })?;
        let location = Location::parse(&enc.keystore, &p.base_dir)?;
        Ok(Some(Keystore { location, master }))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.master))
    }

    fn dir(tenant: &str) -> String {
        format!("tenant={tenant}/")
    }

    /// Whether the tenant's keys were destroyed.
    pub async fn shredded(&self, tenant: &str) -> Result<Option<Shredded>> {
        match self
            .location
            .get_opt(&format!("{}shredded.json", Self::dir(tenant)))
            .await?
        {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                key_error(
                    tenant,
                    None,
                    format!("unreadable shred record: {e}"),
                    "the tenant's keys are gone either way",
                )
            }),
        }
    }

    async fn wrapped_keys(&self, tenant: &str) -> Result<Vec<(String, WrappedKey)>> {
        let mut out = Vec::new();
        for o in self.location.list(&Self::dir(tenant)).await? {
            let name = o.path.rsplit('/').next().unwrap_or("");
            if !(name.starts_with("key-") && name.ends_with(".json")) {
                continue;
            }
            let b = self.location.get(&o.path).await?;
            let w: WrappedKey = serde_json::from_slice(&b).map_err(|e| {
                key_error(
                    tenant,
                    Some(o.path.clone()),
                    format!("unreadable wrapped key: {e}"),
                    "restore the keystore from its backup",
                )
            })?;
            out.push((o.path, w));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn unwrap_key(&self, tenant: &str, path: &str, w: &WrappedKey) -> Result<DataKey> {
        let bad = |m: &str| {
            key_error(
                tenant,
                Some(path.to_string()),
                m.to_string(),
                "the master key does not open this tenant's data key: check that the right master key is set",
            )
        };
        if w.tenant != tenant {
            return Err(bad("the wrapped key belongs to another tenant"));
        }
        let nonce = B64.decode(&w.nonce).map_err(|_| bad("corrupt nonce"))?;
        let wrapped = B64
            .decode(&w.wrapped)
            .map_err(|_| bad("corrupt wrapped key"))?;
        if nonce.len() != 12 {
            return Err(bad("corrupt nonce"));
        }
        let plain = self
            .cipher()
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &wrapped,
                    aad: tenant.as_bytes(),
                },
            )
            .map_err(|_| bad("wrong master key (or a tampered wrapped key)"))?;
        let key: [u8; 32] = plain
            .try_into()
            .map_err(|_| bad("wrapped key has the wrong length"))?;
        register(&w.key_id, key);
        Ok(DataKey {
            id: w.key_id.clone(),
            key,
        })
    }

    /// Loads every data key of a tenant into the process keyring (for reading); the newest is
    /// returned. `None` when the tenant has none yet.
    pub async fn load(&self, tenant: &str) -> Result<Option<DataKey>> {
        let mut last = None;
        for (path, w) in self.wrapped_keys(tenant).await? {
            last = Some(self.unwrap_key(tenant, &path, &w)?);
        }
        Ok(last)
    }

    /// The tenant's current data key, created on first use. Refused once the tenant is shredded.
    pub async fn data_key(&self, tenant: &str) -> Result<DataKey> {
        if self.shredded(tenant).await?.is_some() {
            return Err(key_error(
                tenant,
                None,
                "the tenant was crypto-shredded: its data can no longer be written or read",
                "nothing to do; `lethe gc` removes its unreadable files",
            ));
        }
        if let Some(k) = self.load(tenant).await? {
            return Ok(k);
        }
        let key: [u8; 32] = Aes256Gcm::generate_key(OsRng).into();
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let id = format!("{tenant}/{}", uuid::Uuid::new_v4().simple());
        let wrapped = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &key,
                    aad: tenant.as_bytes(),
                },
            )
            .map_err(|_| Error::internal("AES-GCM wrap failed"))?;
        let w = WrappedKey {
            key_id: id.clone(),
            tenant: tenant.to_string(),
            algorithm: "AES-256-GCM".into(),
            nonce: B64.encode(nonce),
            wrapped: B64.encode(wrapped),
            created_at: chrono::Utc::now().to_rfc3339(),
        };
        let body = serde_json::to_vec_pretty(&w).map_err(|e| Error::internal(e.to_string()))?;
        let path = format!("{}key-0001.json", Self::dir(tenant));
        if self
            .location
            .put_if_absent(&path, Bytes::from(body))
            .await?
        {
            register(&id, key);
            return Ok(DataKey { id, key });
        }
        // Another run created it first: use theirs.
        self.load(tenant)
            .await?
            .ok_or_else(|| Error::internal("keystore race left no key"))
    }

    /// Destroys every wrapped data key of the tenant, leaving a record of the shredding.
    pub async fn shred(&self, tenant: &str) -> Result<Shredded> {
        let keys = self.wrapped_keys(tenant).await?;
        let record = Shredded {
            tenant: tenant.to_string(),
            shredded_at: chrono::Utc::now().to_rfc3339(),
            key_ids: keys.iter().map(|(_, w)| w.key_id.clone()).collect(),
        };
        let body =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
        // The record first: a crash between the two leaves the tenant refused, never half-open.
        self.location
            .put(
                &format!("{}shredded.json", Self::dir(tenant)),
                Bytes::from(body),
            )
            .await?;
        for (path, w) in &keys {
            self.location.delete(path).await?;
            forget(&w.key_id);
        }
        Ok(record)
    }
}

/// Finds data keys by the id stored in a file's footer key metadata.
struct Retriever;

impl parquet::encryption::decrypt::KeyRetriever for Retriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = String::from_utf8_lossy(key_metadata);
        lookup(&id).map(|k| k.to_vec()).ok_or_else(|| {
            parquet::errors::ParquetError::General(format!(
                "no data key `{id}` is available (tenant shredded, wrong master key, or the pipeline does not configure encryption)"
            ))
        })
    }
}

/// Decryption properties that find keys in the process keyring.
pub fn decryption() -> Result<Arc<parquet::encryption::decrypt::FileDecryptionProperties>> {
    parquet::encryption::decrypt::FileDecryptionProperties::with_key_retriever(Arc::new(Retriever))
        .build()
        .map_err(|e| Error::internal(format!("decryption properties: {e}")))
}

/// Whether Parquet bytes are an encrypted-footer file (magic `PARE`).
pub fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && &bytes[bytes.len() - 4..] == b"PARE"
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    /// An encrypted file reads the same through the late-materializing reader as whole, with
    /// the key in the keyring; without it, opening fails with a key error, not a data error.
    #[test]
    fn encrypted_files_open_for_late_materialization() {
        let id = "test-late-materialization";
        register(id, [7u8; 32]);
        let mut df = df!(
            "id" => ["a", "b", "c"],
            "email" => ["x@y.z", "w@y.z", "x@y.z"],
            "n" => [1i64, 2, 3],
        )
        .unwrap();
        let opts = crate::parquet_io::WriteOptions {
            zstd_level: 1,
            row_group_rows: 1024,
            bloom_columns: vec![],
            metadata: vec![],
            encryption: Some(DataKey {
                id: id.into(),
                key: [7u8; 32],
            }),
        };
        let bytes = crate::parquet_io::write_parquet(&mut df, &opts).unwrap();
        assert!(is_encrypted(&bytes));
        let file = crate::parquet_io::Opened::open(bytes.clone(), "enc.parquet").unwrap();
        let arrays = file.columns(&["email"]).unwrap();
        assert_eq!(arrays[0].len(), 3);
        let taken = file.take(&[0, 2], &[("email", &arrays[0])]).unwrap();
        let whole = crate::parquet_io::read_parquet(bytes.clone(), "enc.parquet").unwrap();
        let expected = whole.take(&IdxCa::from_vec("".into(), vec![0, 2])).unwrap();
        assert!(taken.equals_missing(&expected), "{taken} != {expected}");
        forget(id);
        let err = crate::parquet_io::Opened::open(bytes, "enc.parquet").err();
        assert!(
            matches!(err, Some(Error::Key { .. })),
            "a missing key is a key error: {err:?}"
        );
    }
}
