//! WireGuard keys: x25519, 32 bytes, written as 44 characters of standard base64.
//!
//! Three separate types so a private key can never be passed where a public one is expected,
//! and so that secrets (private and preshared keys) never print: their `Debug` is redacted and
//! they have no `Display`; their bytes are zeroed when dropped.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 (with its one `=` of padding), as `wg genkey` prints it.
pub const KEY_BASE64_LEN: usize = 44;

/// Why a text is not a usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not 44 characters long, so it cannot be a base64 WireGuard key.
    #[error("a key is 44 characters of base64, this one has {0}")]
    Length(usize),
    /// 44 characters, but not ones that decode to exactly 32 bytes (e.g. non-ASCII text, or
    /// padding in the wrong place).
    #[error("these 44 characters do not decode to a 32-byte key")]
    NotThirtyTwoBytes,
    /// The text has the right length but is not valid standard base64.
    #[error("not valid base64")]
    Base64(#[source] base64::DecodeError),
    /// A public key of small order: every shared secret with it is all zeros, so the
    /// handshake would provide no secrecy (WireGuard implementations refuse these too).
    #[error("a low-order public key, which would make every shared secret zero")]
    LowOrder,
}

/// Decodes exactly 32 bytes from WireGuard's base64; the scratch buffer is zeroed afterwards
/// because it may hold a secret.
fn decode(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let len = text.chars().count();
    if len != KEY_BASE64_LEN {
        return Err(KeyError::Length(len));
    }
    if text.len() != KEY_BASE64_LEN {
        return Err(KeyError::NotThirtyTwoBytes);
    }
    // 44 base64 characters are at most 33 bytes before padding is accounted for.
    let mut buf = Zeroizing::new([0u8; KEY_LEN + 3]);
    let n = STANDARD
        .decode_slice(text.as_bytes(), &mut buf[..])
        .map_err(|e| match e {
            base64::DecodeSliceError::DecodeError(e) => KeyError::Base64(e),
            base64::DecodeSliceError::OutputSliceTooSmall => KeyError::NotThirtyTwoBytes,
        })?;
    if n != KEY_LEN {
        return Err(KeyError::NotThirtyTwoBytes);
    }
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&buf[..KEY_LEN]);
    Ok(out)
}

fn encode(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// This peer's secret x25519 key (`[interface] private_key`).
///
/// Kept apart from [`PublicKey`] so it cannot leak through logs: `Debug` prints
/// `PrivateKey(<redacted>)` and the bytes are zeroed on drop.
#[derive(Clone)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh key from the OS random source, clamped exactly as `wg genkey` does so the
    /// printed key is byte-for-byte what WireGuard tools would produce.
    pub fn generate() -> Self {
        let mut b = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut b);
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        PrivateKey(b)
    }

    /// Parses WireGuard's base64 form (what `wg genkey` prints). The bytes are kept as written,
    /// like `wg` does; clamping happens inside the x25519 function.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(PrivateKey)
    }

    /// Wraps raw bytes, for callers that already hold a key (tests, generated configs).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PrivateKey(bytes)
    }

    /// The base64 form, for writing config files (`pinhole genkey`, `pinhole init`).
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }

    /// The matching public key, identical to what `wg pubkey` prints for this key.
    pub fn public_key(&self) -> PublicKey {
        let secret = StaticSecret::from(self.0);
        PublicKey(DalekPublic::from(&secret).to_bytes())
    }

    /// The raw bytes, for handing to the WireGuard engine.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Compares the bytes in constant time, so a reload can tell whether the key changed.
impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        crate::policy::ct_eq(&self.0, &other.0)
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A peer's public x25519 key (`[[peer]] public_key`); it is the peer's identity.
///
/// Parsing refuses low-order points, so every `PublicKey` value can be used in a handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Checks raw bytes: refuses the low-order points (see [`is_low_order`]).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        if is_low_order(&bytes) {
            return Err(KeyError::LowOrder);
        }
        Ok(PublicKey(bytes))
    }

    /// The raw bytes, for handing to the WireGuard engine.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The base64 form (same as `Display`).
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses WireGuard's base64 form and refuses low-order points.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PublicKey::from_bytes(decode(s)?)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", encode(&self.0))
    }
}

/// An optional extra symmetric key shared by two peers (`preshared_key`), mixed into the
/// handshake for post-quantum resistance. Secret: redacted `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh random key, as `wg genpsk` makes (no clamping: it is not a curve scalar).
    pub fn generate() -> Self {
        let mut b = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut b);
        PresharedKey(b)
    }

    /// Parses WireGuard's base64 form.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(PresharedKey)
    }

    /// The base64 form, for writing config files.
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }

    /// The raw bytes, for handing to the WireGuard engine.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Compares the bytes in constant time.
impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        crate::policy::ct_eq(&self.0, &other.0)
    }
}

impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// The small-order Curve25519 points listed in the WireGuard kernel selftest (`netns.sh`):
/// 0, 1, the two points of order 8, p-1, p and p+1, little-endian.
pub const LOW_ORDER_POINTS: [[u8; KEY_LEN]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    high_ff(0xec),
    high_ff(0xed),
    high_ff(0xee),
];

/// `first, 0xff × 30, 0x7f`: the encodings of p-1, p and p+1.
const fn high_ff(first: u8) -> [u8; KEY_LEN] {
    let mut b = [0xff; KEY_LEN];
    b[0] = first;
    b[31] = 0x7f;
    b
}

/// True when x25519 with this point gives an all-zero shared secret for every private key.
///
/// Decided by computing, not only by table lookup, so it also covers the non-canonical
/// encodings (the top bit set, which x25519 ignores) of the points in [`LOW_ORDER_POINTS`].
/// A clamped scalar is a multiple of 8, so it sends every small-order point (on the curve or on
/// its twist) to the identity, which encodes as zero; any other point gives a nonzero result.
pub fn is_low_order(bytes: &[u8; KEY_LEN]) -> bool {
    // Any fixed, clamped scalar works; this one is the clamped form of 0x01 repeated.
    let mut scalar = [1u8; KEY_LEN];
    scalar[0] &= 248;
    scalar[31] = (scalar[31] & 127) | 64;
    let secret = StaticSecret::from(scalar);
    let shared = secret.diffie_hellman(&DalekPublic::from(*bytes));
    !shared.was_contributory()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_wg_pubkey() {
        // Vectors computed with `wg pubkey` (wireguard-tools).
        let vectors = [
            (
                "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=",
                "7iSDMRevjR+ygOcfi1ypPz6IMRn/GueEuAdbT/HF9mI=",
            ),
            // Not clamped as written: wg clamps internally, and so must we.
            (
                "qOLnk3M1zN/BXUr3nX/xaJDv0vRjDmJkSlbTZV6TeGc=",
                "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=",
            ),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q=",
            ),
            (
                "//////////////////////////////////////////8=",
                "hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWiI=",
            ),
        ];
        for (private, public) in vectors {
            let key = PrivateKey::from_base64(private).unwrap();
            assert_eq!(
                key.to_base64(),
                private,
                "private key round-trips unchanged"
            );
            assert_eq!(key.public_key().to_string(), public);
        }
    }

    #[test]
    fn generate_is_clamped_and_round_trips() {
        for _ in 0..16 {
            let k = PrivateKey::generate();
            let b = k.as_bytes();
            assert_eq!(b[0] & 7, 0);
            assert_eq!(b[31] & 128, 0);
            assert_eq!(b[31] & 64, 64);
            let text = k.to_base64();
            assert_eq!(text.len(), KEY_BASE64_LEN);
            assert_eq!(PrivateKey::from_base64(&text).unwrap().as_bytes(), b);
            let public = k.public_key();
            assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
            let psk = PresharedKey::generate();
            assert_eq!(
                PresharedKey::from_base64(&psk.to_base64())
                    .unwrap()
                    .as_bytes(),
                psk.as_bytes()
            );
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let k = PrivateKey::generate();
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        assert_eq!(
            format!("{:?}", PresharedKey::generate()),
            "PresharedKey(<redacted>)"
        );
        let p = k.public_key();
        assert_eq!(format!("{p:?}"), format!("PublicKey({p})"));
    }

    #[test]
    fn secrets_compare_by_bytes() {
        let k = PrivateKey::generate();
        assert_eq!(k, PrivateKey::from_bytes(*k.as_bytes()));
        assert_ne!(k, PrivateKey::generate());
        let psk = PresharedKey::generate();
        assert_eq!(psk, PresharedKey::from_base64(&psk.to_base64()).unwrap());
        assert_ne!(psk, PresharedKey::generate());
    }

    #[test]
    fn bad_text_is_refused() {
        assert_eq!(
            PrivateKey::from_base64("").unwrap_err(),
            KeyError::Length(0)
        );
        assert_eq!(
            PrivateKey::from_base64("abc").unwrap_err(),
            KeyError::Length(3)
        );
        // 44 characters, but not base64.
        assert!(matches!(
            PrivateKey::from_base64("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="),
            Err(KeyError::Base64(_))
        ));
        // Non-zero trailing bits are a different key text for the same bytes: refused, as by wg.
        assert!(PrivateKey::from_base64("kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HF=").is_err());
        // 44 characters of base64 without padding decode to 33 bytes.
        assert!(PrivateKey::from_base64("kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HEA").is_err());
        // Multi-byte characters: no panic, just an error.
        assert!(PublicKey::from_str("ééééééééééééééééééééééé").is_err());
        assert!(PublicKey::from_str("éééééééééééééééééééééééééééééééééééééééééé").is_err());
    }

    #[test]
    fn low_order_points_give_zero_secrets_and_are_refused() {
        let wg_list = [
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
            "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
            "7P///////////////////////////////////////38=",
            "7f///////////////////////////////////////38=",
            "7v///////////////////////////////////////38=",
        ];
        for (text, bytes) in wg_list.iter().zip(LOW_ORDER_POINTS) {
            assert_eq!(decode(text).unwrap(), bytes, "table matches netns.sh");
            assert_eq!(text.parse::<PublicKey>().unwrap_err(), KeyError::LowOrder);
            let mut high = bytes;
            high[31] |= 0x80;
            assert_eq!(PublicKey::from_bytes(high).unwrap_err(), KeyError::LowOrder);
            for _ in 0..4 {
                let secret = StaticSecret::from(*PrivateKey::generate().as_bytes());
                for point in [bytes, high] {
                    let shared = secret.diffie_hellman(&DalekPublic::from(point));
                    assert_eq!(shared.as_bytes(), &[0u8; 32]);
                }
            }
        }
        // An ordinary key is accepted.
        assert!(!is_low_order(
            PrivateKey::generate().public_key().as_bytes()
        ));
    }
}
