//! Secrets: admin tokens, console sessions and CSRF tokens, generated keys. One
//! generator for every random number of Tollgate — `rand`'s thread generator (ChaCha,
//! seeded and reseeded by the operating system; cryptographically secure) — so no
//! secret anywhere comes from a home-made source.

/// `bytes` random bytes as `2 × bytes` lower-case hex digits (32 bytes → 64
/// characters).
///
/// # Errors
/// None in practice: kept so callers refuse what needed the secret rather than make a
/// weak one, should the generator ever be able to fail.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    Ok(hex::encode(buf))
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
