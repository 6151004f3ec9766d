//! Numbers and booleans as the document types them. Each field of these kinds reads
//! the value the way it was written (`deserialize_any`): `60` is a number and `"60"` is
//! text, refused where a number is expected. Without this, the YAML parser turned the
//! quoted text into the number when the configuration was read straight into its
//! types, and refused it when read through generic values: the same file was valid or
//! not depending on whether another item held a mistake. JSON (the admin API) reads
//! alike. The messages are serde's own (`invalid type: string "60", expected u64`), so
//! the configuration errors say them in words as before.

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A whole number of type `T`, named as serde names it (`u64`, `u32`, `u16`).
struct Whole<T>(&'static str, PhantomData<T>);

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }
}

/// An optional whole number: absent or null is `None`.
struct Optional<T>(&'static str, PhantomData<T>);

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Whole(self.0, PhantomData)).map(Some)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<T>, E> {
        Whole(self.0, PhantomData).visit_u64(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<T>, E> {
        Whole(self.0, PhantomData).visit_i64(v).map(Some)
    }
}

/// `true` or `false`, never text.
struct Boolean;

impl Visitor<'_> for Boolean {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole("u64", PhantomData))
}

pub(crate) fn u16<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    d.deserialize_any(Whole("u16", PhantomData))
}

pub(crate) fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(Optional("u64", PhantomData))
}

pub(crate) fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_any(Optional("u32", PhantomData))
}

pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(Boolean)
}
