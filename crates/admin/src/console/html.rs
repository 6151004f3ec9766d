//! HTML building blocks: the page layout with its navigation, forms that carry the CSRF
//! token and show the API's error next to the field it names, tables, buttons.
//!
//! Everything is written with maud's `html!`, which escapes every value it is given
//! unless it is wrapped in `PreEscaped` — so a name, a URL or an error message can never
//! become markup. The console never wraps anything in `PreEscaped`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use maud::{Markup, html};
use std::fmt::Write;

pub const CSS: &str = include_str!("console.css");
pub const JS: &str = include_str!("console.js");

/// The sections of the navigation, in its order: (label, path).
const NAV: [(&str, &str); 6] = [
    ("Dashboard", "/"),
    ("Backends", "/backends"),
    ("Products", "/products"),
    ("Accounts", "/accounts"),
    ("Applications", "/applications"),
    ("Analytics", "/analytics"),
];

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
    status: StatusCode,
    body: Vec<Markup>,
}

impl Page {
    /// A page of the console, its section highlighted in the navigation.
    pub fn new(title: impl Into<String>, section: &'static str, csrf: &str) -> Page {
        Page {
            title: title.into(),
            section: Some(section),
            csrf: Some(csrf.into()),
            crumbs: Vec::new(),
            status: StatusCode::OK,
            body: Vec::new(),
        }
    }

    /// A page without navigation (login, refusals).
    pub fn bare(title: impl Into<String>) -> Page {
        Page {
            title: title.into(),
            section: None,
            csrf: None,
            crumbs: Vec::new(),
            status: StatusCode::OK,
            body: Vec::new(),
        }
    }

    /// A breadcrumb above the title.
    pub fn crumb(mut self, label: &str, href: &str) -> Page {
        self.crumbs.push((label.into(), href.into()));
        self
    }

    /// The response's status (200 unless said).
    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    pub fn push(mut self, markup: Markup) -> Page {
        self.body.push(markup);
        self
    }

    pub fn para(self, text: &str) -> Page {
        self.push(html! { p { (text) } })
    }

    /// An error banner (announced to screen readers), if there is an error; a page
    /// with an error answers 422 unless another status was set.
    pub fn error(mut self, message: Option<&str>) -> Page {
        let Some(m) = message else { return self };
        if self.status == StatusCode::OK {
            self.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        self.push(html! { p.error role="alert" { (m) } })
    }

    /// A confirmation banner, if there is one.
    pub fn notice(self, message: Option<&str>) -> Page {
        match message {
            Some(m) => self.push(html! { p.notice role="status" { (m) } }),
            None => self,
        }
    }

    pub fn render(&self) -> Markup {
        html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · Tollgate" }
                    @if let Some(csrf) = &self.csrf { meta name="csrf" content=(csrf); }
                    // No favicon to fetch (a request, and a 404, per page otherwise).
                    link rel="icon" href="data:,";
                    link rel="stylesheet" href="/console.css";
                    script src="/console.js" defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    @if let Some(section) = self.section {
                        nav aria-label="Main" {
                            a.brand href="/" { "Tollgate" }
                            ul {
                                @for (label, href) in NAV {
                                    li { a href=(href) aria-current=[(label == section).then_some("page")] { (label) } }
                                }
                            }
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="_csrf" value=(self.csrf.as_deref().unwrap_or_default());
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                    main #main {
                        @if !self.crumbs.is_empty() {
                            nav.crumbs aria-label="Breadcrumb" {
                                @for (label, href) in &self.crumbs { a href=(href) { (label) } " › " }
                            }
                        }
                        h1 { (self.title) }
                        @for part in &self.body { (part) }
                    }
                }
            }
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.status, self.render()).into_response()
    }
}

/// A form posting to `action` with the CSRF token, its fields, and a submit button.
pub fn form(action: &str, csrf: &str, fields: Markup, submit: &str) -> Markup {
    html! {
        form.card method="post" action=(action) {
            input type="hidden" name="_csrf" value=(csrf);
            (fields)
            button type="submit" { (submit) }
        }
    }
}

/// A one-button form (promote, suspend…), confirmed first when `confirm` is set.
pub fn button(action: &str, csrf: &str, label: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            input type="hidden" name="_csrf" value=(csrf);
            button.secondary type="submit" { (label) }
        }
    }
}

/// A destructive one-button form (delete, remove, revoke): drawn as such, and always
/// confirmed with `confirm` first.
pub fn danger_button(action: &str, csrf: &str, label: &str, confirm: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=(confirm) {
            input type="hidden" name="_csrf" value=(csrf);
            button.danger type="submit" { (label) }
        }
    }
}

/// How a form field is drawn.
pub struct Field<'a> {
    pub label: &'a str,
    pub name: &'a str,
    pub value: &'a str,
    pub kind: &'a str,
    pub hint: &'a str,
    pub placeholder: &'a str,
    pub required: bool,
}

impl<'a> Field<'a> {
    pub fn text(label: &'a str, name: &'a str, value: &'a str) -> Field<'a> {
        Field { label, name, value, kind: "text", hint: "", placeholder: "", required: false }
    }

    pub fn hint(self, hint: &'a str) -> Field<'a> {
        Field { hint, ..self }
    }

    /// Shown in an empty field: the default that applies when it stays empty.
    pub fn placeholder(self, placeholder: &'a str) -> Field<'a> {
        Field { placeholder, ..self }
    }

    pub fn required(self) -> Field<'a> {
        Field { required: true, ..self }
    }

    pub fn kind(self, kind: &'a str) -> Field<'a> {
        Field { kind, ..self }
    }

    /// The field's id: its name with `.`, `[` and `]` made `-`.
    pub fn id(name: &str) -> String {
        format!("f-{}", name.replace(['.', '[', ']', ':'], "-"))
    }

    /// The field; marked invalid (with the message) when the API's error names it.
    pub fn html(&self, error: Option<(&str, &str)>) -> Markup {
        let id = Field::id(self.name);
        let invalid = error.filter(|(field, _)| field_matches(field, self.name)).map(|(_, m)| m);
        let err_id = format!("{id}-err");
        let hint_id = format!("{id}-hint");
        let described = match (invalid.is_some(), self.hint.is_empty()) {
            (true, false) => Some(format!("{err_id} {hint_id}")),
            (true, true) => Some(err_id.clone()),
            (false, false) => Some(hint_id.clone()),
            (false, true) => None,
        };
        let placeholder = (!self.placeholder.is_empty()).then_some(self.placeholder);
        html! {
            div.field.check[self.kind == "checkbox"] {
                @if self.kind == "checkbox" {
                    input id=(id) name=(self.name) type="checkbox" value="true" checked[self.value == "true"]
                        aria-describedby=[described.as_deref()];
                    label for=(id) { (self.label) }
                } @else {
                    label for=(id) { (self.label) @if self.required { span.req aria-hidden="true" { " *" } } }
                    @if self.kind == "textarea" {
                        textarea id=(id) name=(self.name) rows="6" required[self.required] placeholder=[placeholder]
                            aria-invalid=[invalid.map(|_| "true")] aria-describedby=[described.as_deref()] { (self.value) }
                    } @else {
                        input id=(id) name=(self.name) type=(self.kind) value=(self.value) required[self.required]
                            placeholder=[placeholder] aria-invalid=[invalid.map(|_| "true")]
                            aria-describedby=[described.as_deref()];
                    }
                }
                @if !self.hint.is_empty() { span.hint id=(hint_id) { (self.hint) } }
                @if let Some(m) = invalid { span.field-error id=(err_id) { (m) } }
            }
        }
    }
}

/// Whether the API's error `field` (a path such as `tls.ca_file` or
/// `products[0].backend_usages[1].path`) is about the form field `name`.
fn field_matches(field: &str, name: &str) -> bool {
    field == name || field.ends_with(&format!(".{name}"))
}

/// A select box of `(value, label)` options, with an optional hint below it.
pub fn select(label: &str, name: &str, options: &[(String, String)], selected: &str) -> Markup {
    select_with(label, name, options, selected, "")
}

pub fn select_with(label: &str, name: &str, options: &[(String, String)], selected: &str, hint: &str) -> Markup {
    let id = Field::id(name);
    let hint_id = format!("{id}-hint");
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) aria-describedby=[(!hint.is_empty()).then_some(hint_id.as_str())] {
                @for (value, text) in options {
                    option value=(value) selected[value == selected] { (text) }
                }
            }
            @if !hint.is_empty() { span.hint id=(hint_id) { (hint) } }
        }
    }
}

/// A table with a header row, or "No … yet." when there are no rows.
pub fn table(caption: &str, head: &[&str], rows: Vec<Vec<Markup>>) -> Markup {
    table_or(caption, head, rows, &format!("No {} yet.", caption.to_lowercase()))
}

/// A table with a header row; `empty` is what shows when there are no rows.
pub fn table_or(caption: &str, head: &[&str], rows: Vec<Vec<Markup>>, empty: &str) -> Markup {
    if rows.is_empty() {
        return html! { p.empty { (empty) } };
    }
    html! {
        table {
            caption { (caption) }
            thead { tr { @for h in head { th scope="col" { (h) } } } }
            tbody {
                @for row in rows { tr { @for cell in row { td { (cell) } } } }
            }
        }
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(ms: &serde_json::Value) -> String {
    let Some(ms) = ms.as_i64() else { return String::new() };
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = tollgate_model::period::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub fn link(href: &str, text: &str) -> Markup {
    html! { a href=(href) { (text) } }
}

/// `text` in a `code` element.
pub fn code(text: &str) -> Markup {
    html! { code { (text) } }
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
    fn values_are_escaped_unless_maud_made_them() {
        let f = Field::text("Name <b>", "name", r#""><script>alert(1)</script>"#).html(None).into_string();
        assert!(!f.contains("<script>") && f.contains("&lt;script&gt;") && f.contains("Name &lt;b&gt;"), "{f}");
        assert_eq!(url_encode("/products?x=1 2"), "%2Fproducts%3Fx%3D1%202");
        let t = table("Things", &["A"], vec![vec![html! { "<i>" }]]).into_string();
        assert!(t.contains("&lt;i&gt;"), "{t}");
    }

    #[test]
    fn fields_show_the_error_the_api_names() {
        let f = Field::text("Private Base URL", "private_base_url", "ftp://x").required();
        let html = f.html(Some(("private_base_url", "use http, https, ws or wss"))).into_string();
        assert!(html.contains(r#"aria-invalid="true""#) && html.contains("use http, https, ws or wss"), "{html}");
        assert!(html.contains(r#"aria-describedby="f-private_base_url-err""#), "{html}");
        let other = Field::text("Name", "name", "").html(Some(("private_base_url", "x"))).into_string();
        assert!(!other.contains("aria-invalid"), "{other}");
        assert!(field_matches("backends[0].tls.ca_file", "tls.ca_file"));
    }
}
