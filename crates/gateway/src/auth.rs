//! Reading credentials from a request, per the product's authentication settings.

use base64::Engine;
use http::header;
use http::request::Parts;
use std::borrow::Cow;
use tollgate_model::pattern::QueryArgs;
use tollgate_model::{AuthMode, Authentication, CredentialsLocation};

#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    UserKey(Cow<'a, str>),
    AppId { app_id: Cow<'a, str>, app_key: Option<Cow<'a, str>> },
}

/// The request's credentials, or `None` when they are missing (always, for
/// `client_certificate` products: their credential is the connection's certificate).
pub fn extract<'a>(auth: &Authentication, req: &'a Parts, query: &'a QueryArgs<'a>) -> Option<Credentials<'a>> {
    if auth.mode == AuthMode::ClientCertificate {
        return None;
    }
    match auth.credentials_location {
        CredentialsLocation::Query => match auth.mode {
            AuthMode::UserKey => query
                .get(&auth.user_key_param)
                .filter(|k| !k.is_empty())
                .map(|k| Credentials::UserKey(Cow::Borrowed(k))),
            AuthMode::AppIdAppKey => {
                let app_id = query.get(&auth.app_id_param).filter(|k| !k.is_empty())?;
                let app_key = query.get(&auth.app_key_param).filter(|k| !k.is_empty());
                Some(Credentials::AppId { app_id: Cow::Borrowed(app_id), app_key: app_key.map(Cow::Borrowed) })
            }
            AuthMode::ClientCertificate => None,
        },
        CredentialsLocation::Headers => {
            let h = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
            match auth.mode {
                AuthMode::UserKey => h(&auth.user_key_param).map(|k| Credentials::UserKey(Cow::Borrowed(k))),
                AuthMode::AppIdAppKey => {
                    let app_id = h(&auth.app_id_param)?;
                    Some(Credentials::AppId {
                        app_id: Cow::Borrowed(app_id),
                        app_key: h(&auth.app_key_param).map(Cow::Borrowed),
                    })
                }
                AuthMode::ClientCertificate => None,
            }
        }
        CredentialsLocation::Authorization => {
            let value = req.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = value.split_once(' ')?;
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("bearer") {
                return match auth.mode {
                    AuthMode::UserKey if !rest.is_empty() => Some(Credentials::UserKey(Cow::Borrowed(rest))),
                    _ => None,
                };
            }
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
            if user.is_empty() {
                return None;
            }
            match auth.mode {
                AuthMode::UserKey => Some(Credentials::UserKey(Cow::Owned(user.to_string()))),
                AuthMode::AppIdAppKey => Some(Credentials::AppId {
                    app_id: Cow::Owned(user.to_string()),
                    app_key: (!password.is_empty()).then(|| Cow::Owned(password.to_string())),
                }),
                AuthMode::ClientCertificate => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn auth(mode: AuthMode, loc: CredentialsLocation) -> Authentication {
        Authentication { mode, credentials_location: loc, ..Default::default() }
    }

    #[test]
    fn every_location() {
        let a = auth(AuthMode::UserKey, CredentialsLocation::Query);
        let p = parts("/x?user_key=k1", &[]);
        let q = QueryArgs::parse(p.uri.query());
        assert_eq!(extract(&a, &p, &q), Some(Credentials::UserKey("k1".into())));

        let a = auth(AuthMode::UserKey, CredentialsLocation::Headers);
        let p = parts("/x", &[("user_key", "k2")]);
        assert_eq!(extract(&a, &p, &QueryArgs::default()), Some(Credentials::UserKey("k2".into())));

        let a = auth(AuthMode::UserKey, CredentialsLocation::Authorization);
        let p = parts("/x", &[("authorization", "Bearer k3")]);
        assert_eq!(extract(&a, &p, &QueryArgs::default()), Some(Credentials::UserKey("k3".into())));
        let p = parts("/x", &[("authorization", "Basic azQ6")]); // "k4:"
        assert_eq!(extract(&a, &p, &QueryArgs::default()), Some(Credentials::UserKey("k4".into())));

        let a = auth(AuthMode::AppIdAppKey, CredentialsLocation::Authorization);
        let p = parts("/x", &[("authorization", "Basic aWQ6a2V5")]); // "id:key"
        assert_eq!(
            extract(&a, &p, &QueryArgs::default()),
            Some(Credentials::AppId { app_id: "id".into(), app_key: Some("key".into()) })
        );
        let a = auth(AuthMode::AppIdAppKey, CredentialsLocation::Query);
        let p = parts("/x?app_id=id", &[]);
        let q = QueryArgs::parse(p.uri.query());
        assert_eq!(extract(&a, &p, &q), Some(Credentials::AppId { app_id: "id".into(), app_key: None }));
    }

    #[test]
    fn missing_or_malformed_is_none() {
        let a = auth(AuthMode::UserKey, CredentialsLocation::Authorization);
        for h in ["Basic !!!", "Digest x", "Bearer ", "Basic Ong="] {
            let p = parts("/x", &[("authorization", h)]);
            assert_eq!(extract(&a, &p, &QueryArgs::default()), None, "{h}");
        }
        let a = auth(AuthMode::UserKey, CredentialsLocation::Query);
        let p = parts("/x?user_key=", &[]);
        let q = QueryArgs::parse(p.uri.query());
        assert_eq!(extract(&a, &p, &q), None);
    }
}
