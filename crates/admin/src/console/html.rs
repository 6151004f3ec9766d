//! HTML building blocks: escaping, the page layout with its navigation, forms that
//! carry the CSRF token and show the API's error next to the field it names. Plain
//! `format!` over escaped values: every value that reaches a page goes through `esc`.

use axum::response::Html;
use std::fmt::Write;

pub const CSS: &str = include_str!("console.css");
pub const JS: &str = include_str!("console.js");

/// The sections of the navigation, in its order: (label, path).
const NAV: [(&str, &str); 5] = [
    ("Backends", "/backends"),
    ("Products", "/products"),
    ("Accounts", "/accounts"),
    ("Applications", "/applications"),
    ("Analytics", "/analytics"),
];

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (for paths and queries).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A page under construction.
pub struct Page {
    title: String,
    section: Option<&'static str>,
    csrf: Option<String>,
    crumbs: Vec<(String, String)>,
    body: String,
}

impl Page {
    /// A page of the console, its section highlighted in the navigation.
    pub fn new(title: impl Into<String>, section: &'static str, csrf: &str) -> Page {
        Page {
            title: title.into(),
            section: Some(section),
            csrf: Some(csrf.into()),
            crumbs: Vec::new(),
            body: String::new(),
        }
    }

    /// A page without navigation (login, refusals).
    pub fn bare(title: impl Into<String>) -> Page {
        Page { title: title.into(), section: None, csrf: None, crumbs: Vec::new(), body: String::new() }
    }

    /// A breadcrumb above the title.
    pub fn crumb(mut self, label: &str, href: &str) -> Page {
        self.crumbs.push((label.into(), href.into()));
        self
    }

    pub fn raw(mut self, html: impl AsRef<str>) -> Page {
        self.body.push_str(html.as_ref());
        self
    }

    pub fn para(self, text: &str) -> Page {
        let p = format!("<p>{}</p>", esc(text));
        self.raw(p)
    }

    /// An error banner (announced to screen readers), if there is an error.
    pub fn error(self, message: Option<&str>) -> Page {
        match message {
            Some(m) => {
                let html = format!(r#"<p class="error" role="alert">{}</p>"#, esc(m));
                self.raw(html)
            }
            None => self,
        }
    }

    pub fn render(self) -> Html<String> {
        let mut nav = String::new();
        if let Some(section) = self.section {
            nav.push_str(r#"<nav aria-label="Main"><a class="brand" href="/">Tollgate</a><ul>"#);
            for (label, href) in NAV {
                let current = if label == section { r#" aria-current="page""# } else { "" };
                let _ = write!(nav, r#"<li><a href="{href}"{current}>{label}</a></li>"#);
            }
            let csrf = esc(self.csrf.as_deref().unwrap_or_default());
            let _ = write!(
                nav,
                r#"</ul><form method="post" action="/logout" class="logout"><input type="hidden" name="_csrf" value="{csrf}"><button type="submit" class="link">Log out</button></form></nav>"#
            );
        }
        let mut crumbs = String::new();
        if !self.crumbs.is_empty() {
            crumbs.push_str(r#"<p class="crumbs">"#);
            for (label, href) in &self.crumbs {
                let _ = write!(crumbs, r#"<a href="{}">{}</a> › "#, esc(href), esc(label));
            }
            crumbs.push_str("</p>");
        }
        let csrf_meta =
            self.csrf.as_deref().map(|c| format!(r#"<meta name="csrf" content="{}">"#, esc(c))).unwrap_or_default();
        Html(format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Tollgate</title>{csrf_meta}<link rel="stylesheet" href="/console.css"><script src="/console.js" defer></script></head>
<body>{nav}<main>{crumbs}<h1>{title}</h1>{body}</main></body></html>"#,
            title = esc(&self.title),
            body = self.body,
        ))
    }
}

/// A form posting to `action` with the CSRF token, its fields, and a submit button.
pub fn form(action: &str, csrf: &str, fields: &str, submit: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="card"><input type="hidden" name="_csrf" value="{}">{fields}<button type="submit">{}</button></form>"#,
        esc(action),
        esc(csrf),
        esc(submit)
    )
}

/// A one-button form (delete, promote, suspend…), confirmed first when `confirm` is set.
pub fn button(action: &str, csrf: &str, label: &str, confirm: Option<&str>) -> String {
    let confirm = confirm.map(|c| format!(r#" data-confirm="{}""#, esc(c))).unwrap_or_default();
    format!(
        r#"<form method="post" action="{}" class="inline"{confirm}><input type="hidden" name="_csrf" value="{}"><button type="submit">{}</button></form>"#,
        esc(action),
        esc(csrf),
        esc(label)
    )
}

/// How a form field is drawn.
pub struct Field<'a> {
    pub label: &'a str,
    pub name: &'a str,
    pub value: &'a str,
    pub kind: &'a str,
    pub hint: &'a str,
    pub required: bool,
}

impl<'a> Field<'a> {
    pub fn text(label: &'a str, name: &'a str, value: &'a str) -> Field<'a> {
        Field { label, name, value, kind: "text", hint: "", required: false }
    }

    pub fn hint(self, hint: &'a str) -> Field<'a> {
        Field { hint, ..self }
    }

    pub fn required(self) -> Field<'a> {
        Field { required: true, ..self }
    }

    pub fn kind(self, kind: &'a str) -> Field<'a> {
        Field { kind, ..self }
    }

    /// The field's HTML; marked invalid (with the message) when the API's error names it.
    pub fn html(&self, error: Option<(&str, &str)>) -> String {
        let id = format!("f-{}", self.name.replace(['.', '[', ']'], "-"));
        let invalid = error.filter(|(field, _)| field_matches(field, self.name));
        let (aria, note) = match invalid {
            Some((_, msg)) => (
                format!(r#" aria-invalid="true" aria-describedby="{id}-err""#),
                format!(r#"<span class="field-error" id="{id}-err">{}</span>"#, esc(msg)),
            ),
            None => (String::new(), String::new()),
        };
        let hint = if self.hint.is_empty() {
            String::new()
        } else {
            format!(r#"<span class="hint">{}</span>"#, esc(self.hint))
        };
        let required = if self.required { " required" } else { "" };
        let control = if self.kind == "checkbox" {
            let checked = if self.value == "true" { " checked" } else { "" };
            format!(r#"<input id="{id}" name="{}" type="checkbox" value="true"{checked}{aria}>"#, esc(self.name))
        } else if self.kind == "textarea" {
            format!(
                r#"<textarea id="{id}" name="{}" rows="6"{required}{aria}>{}</textarea>"#,
                esc(self.name),
                esc(self.value)
            )
        } else {
            format!(
                r#"<input id="{id}" name="{}" type="{}" value="{}"{required}{aria}>"#,
                esc(self.name),
                esc(self.kind),
                esc(self.value)
            )
        };
        format!(r#"<div class="field"><label for="{id}">{}</label>{control}{hint}{note}</div>"#, esc(self.label))
    }
}

/// Whether the API's error `field` (a path such as `tls.ca_file` or
/// `products[0].backend_usages[1].path`) is about the form field `name`.
fn field_matches(field: &str, name: &str) -> bool {
    field == name || field.ends_with(&format!(".{name}"))
}

/// A select box of `(value, label)` options.
pub fn select(label: &str, name: &str, options: &[(String, String)], selected: &str) -> String {
    let id = format!("f-{name}");
    let mut out = format!(
        r#"<div class="field"><label for="{id}">{}</label><select id="{id}" name="{}">"#,
        esc(label),
        esc(name)
    );
    for (value, text) in options {
        let sel = if value == selected { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{}"{sel}>{}</option>"#, esc(value), esc(text));
    }
    out.push_str("</select></div>");
    out
}

/// A table with a header row; cells are HTML (escape what goes in).
pub fn table(caption: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="empty">No {} yet.</p>"#, esc(&caption.to_lowercase()));
    }
    let mut out = format!(r#"<table><caption>{}</caption><thead><tr>"#, esc(caption));
    for h in head {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(ms: &serde_json::Value) -> String {
    let Some(ms) = ms.as_i64() else { return String::new() };
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = tollgate_model::period::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub fn link(href: &str, text: &str) -> String {
    format!(r#"<a href="{}">{}</a>"#, esc(href), esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(&serde_json::json!(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(&serde_json::json!(1_795_731_632_698_i64)), "2026-11-26 22:20:32 UTC");
        assert_eq!(time(&serde_json::json!(951_782_400_000_i64)), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(url_encode("/products?x=1 2"), "%2Fproducts%3Fx%3D1%202");
    }

    #[test]
    fn fields_show_the_error_the_api_names() {
        let f = Field::text("Private Base URL", "private_base_url", "ftp://x").required();
        let html = f.html(Some(("private_base_url", "use http, https, ws or wss")));
        assert!(html.contains(r#"aria-invalid="true""#) && html.contains("use http, https, ws or wss"), "{html}");
        assert!(!Field::text("Name", "name", "").html(Some(("private_base_url", "x"))).contains("aria-invalid"));
        assert!(field_matches("backends[0].tls.ca_file", "tls.ca_file"));
    }
}
