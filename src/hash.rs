//! Keyed hashes (HMAC-SHA256) and checksums.
//!
//! Identifiers never appear in plain text in logs, errors, reports, suppression lists or evidence:
//! they appear as keyed hashes. Each tenant gets its own derived key, so hashes of the same person
//! in two tenants cannot be linked (tenants are separate controllers).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::spec::Pipeline;

type HmacSha256 = Hmac<Sha256>;

/// A publicly known key, accepted only when the spec sets `keys.allow_demo_key` (sample data).
const DEMO_KEY: &[u8] = b"lethe-demo-key-NOT-SECRET-do-not-use-in-production";

#[derive(Clone)]
pub struct Keyed {
    key: Vec<u8>,
    /// True when the demo key is in use; reports and logs say so loudly.
    pub demo: bool,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("demo", &self.demo)
            .finish_non_exhaustive()
    }
}

impl Keyed {
    pub fn new(key: Vec<u8>) -> Self {
        Keyed { key, demo: false }
    }

    /// The pipeline's HMAC key from the environment variable the spec names.
    pub fn from_pipeline(p: &Pipeline) -> Result<Self> {
        let var = p.keys.hmac_key_env.as_deref();
        let value = var
            .and_then(|v| std::env::var(v).ok())
            .filter(|v| !v.trim().is_empty());
        match value {
            Some(v) => {
                let v = v.trim();
                let key = hex::decode(v).unwrap_or_else(|_| v.as_bytes().to_vec());
                if key.len() < 16 {
                    return Err(Error::config(
                        format!(
                            "the HMAC key in ${} is shorter than 16 bytes",
                            var.unwrap_or_default()
                        ),
                        "generate one with `openssl rand -hex 32`",
                    ));
                }
                Ok(Keyed { key, demo: false })
            }
            None if p.keys.allow_demo_key => Ok(Keyed {
                key: DEMO_KEY.to_vec(),
                demo: true,
            }),
            None => Err(Error::config(
                match var {
                    Some(v) => format!("the HMAC key variable ${v} is not set"),
                    None => "the spec names no HMAC key (`keys.hmac_key_env`)".to_string(),
                },
                "export the key (e.g. `export LETHE_HMAC_KEY=$(openssl rand -hex 32)`, kept in your secret store); suppression lists and evidence are keyed with it",
            )),
        }
    }

    fn tenant_key(&self, tenant: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(b"lethe/tenant/");
        mac.update(tenant.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Keyed hash of a normalized identifier of `kind` in `tenant`, as lowercase hex.
    pub fn identifier(&self, tenant: &str, kind: &str, normalized: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.tenant_key(tenant))
            .expect("HMAC accepts any key length");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A hasher bound to one tenant, to hash many identifiers without re-deriving the key.
    pub fn for_tenant(&self, tenant: &str) -> TenantHasher {
        TenantHasher {
            key: self.tenant_key(tenant),
        }
    }
}

pub struct TenantHasher {
    key: Vec<u8>,
}

impl TenantHasher {
    /// A 128-bit key for the footer fingerprints of this tenant's files (keyed SipHash: fast
    /// enough for every row, and useless for probing a file without the pipeline's key).
    pub fn fingerprint_key(&self) -> [u8; 16] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(b"lethe/fingerprint");
        let d = mac.finalize().into_bytes();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        k
    }

    pub fn identifier(&self, kind: &str, normalized: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tenant_keys_differ() {
        let k = Keyed::new(b"0123456789abcdef0123".to_vec());
        let a = k.identifier("t1", "email", "a@b.c");
        assert_eq!(a, k.identifier("t1", "email", "a@b.c"));
        assert_ne!(a, k.identifier("t2", "email", "a@b.c"));
        assert_ne!(a, k.identifier("t1", "phone", "a@b.c"));
        assert_eq!(a, k.for_tenant("t1").identifier("email", "a@b.c"));
        assert_eq!(a.len(), 64);
    }
}
