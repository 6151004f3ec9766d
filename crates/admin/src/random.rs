//! Secrets: admin tokens, console sessions and CSRF tokens, generated keys. One
//! generator for all of them — the operating system's, through `ring` (already the
//! gateway's cryptography) — so no secret anywhere comes from a home-made source.

use ring::rand::{SecureRandom, SystemRandom};

/// `bytes` random bytes from the operating system, as `2 × bytes` lower-case hex
/// digits (32 bytes → 64 characters).
///
/// # Errors
/// When the operating system gives no random bytes (practically never; the caller
/// refuses what needed the secret rather than making a weak one).
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| std::io::Error::other("the system gave no random bytes"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_of_the_asked_length_and_never_twice_the_same() {
        let a = super::random_hex(16).expect("random");
        let b = super::random_hex(16).expect("random");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
