//! The commands that manage a running Tollgate through its admin API: `apply`,
//! `export`, `deploy`, `promote`, `diff`. Plain HTTP to `--admin-url` with the bearer
//! token from `TOLLGATE_ADMIN_TOKEN`.

use crate::cli::{AdminArgs, ApplyArgs, ProductArgs, PromoteArgs, UsageArgs};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::process::ExitCode;

struct Admin {
    base: String,
    token: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Admin {
    fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        let Some(token) = args.token.clone().filter(|t| !t.is_empty()) else {
            bail!(
                "no admin token: set TOLLGATE_ADMIN_TOKEN (printed at the first start of `tollgate serve`) or pass --token"
            );
        };
        if !args.admin_url.starts_with("http://") {
            bail!("--admin-url `{}`: write http://HOST:PORT", args.admin_url);
        }
        Ok(Admin {
            base: args.admin_url.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Calls `/api/v1{path}`; an error response becomes an error with its message.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}/api/v1{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))?;
        let resp =
            self.client.request(req).await.with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            let e = &value["error"];
            let field = e["field"].as_str().map(|f| format!(" (field `{f}`)")).unwrap_or_default();
            bail!(
                "{method} {path}: HTTP {status} {}: {}{field}",
                e["code"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            );
        }
        Ok((status, value))
    }
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    // Read locally first: syntax, key and type mistakes come with their paths before
    // anything is sent. The rules and the references are the store's to check, against
    // what it holds besides the file (a backend the file's products use may be there
    // already); its 422 names the first mistake by its place in the file.
    let config = match tollgate_model::read_file(&args.file) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {} error(s)", args.file.display(), errors.0.len());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let admin = Admin::new(&args.admin)?;
    // One request does it all (the store's writes, then the deploys and promotions, in
    // one transaction): the gateways recompile once, whatever the size of the file.
    let query = if args.dry_run {
        "?dry_run=true"
    } else if args.promote {
        "?promote=true"
    } else if args.deploy {
        "?deploy=true"
    } else {
        ""
    };
    let (_, result) = admin.call("PUT", &format!("/config{query}"), Some(serde_json::to_value(&config)?)).await?;
    let changes = result["changes"].as_array().cloned().unwrap_or_default();
    let verb = if args.dry_run { "would" } else { "did" };
    if changes.is_empty() {
        println!("no changes: the store already matches {}", args.file.display());
    }
    for c in &changes {
        println!(
            "{verb} {} {} {}",
            c["action"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?")
        );
    }
    let listed = |key: &str| result[key].as_array().cloned().unwrap_or_default();
    for d in listed("deployed") {
        let what = if d["unchanged"] == true { "unchanged:" } else { "deployed" };
        println!("{what} {} staging version {}", d["product"].as_str().unwrap_or("?"), d["version"]);
    }
    for p in listed("promoted") {
        let (product, version) = (p["product"].as_str().unwrap_or("?"), &p["version"]);
        match p["unchanged"] == true {
            true => println!("unchanged: {product} production serves version {version}"),
            false => println!("promoted {product} version {version} to production"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn export(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args)?;
    let (_, value) = admin.call("GET", "/config", None).await?;
    let config: tollgate_model::Config =
        serde_json::from_value(value).context("the admin API sent an unexpected export")?;
    print!("{}", serde_norway::to_string(&config)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn deploy(args: ProductArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let (status, v) = admin.call("POST", &format!("/products/{}/deploy", encode(&args.product)), None).await?;
    if status == 201 {
        println!("deployed {} to staging as version {}", args.product, v["version"]);
    } else {
        println!("{}: the draft equals staging version {}; nothing deployed", args.product, v["version"]);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn promote(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let body = args.version.map(|v| json!({ "version": v }));
    let (status, v) = admin.call("POST", &format!("/products/{}/promote", encode(&args.product)), body).await?;
    if status == 201 {
        println!("promoted {} version {} to production", args.product, v["version"]);
    } else {
        println!("{}: production serves version {} already; nothing promoted", args.product, v["version"]);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn diff(args: ProductArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let (_, v) = admin.call("GET", &format!("/products/{}/configs/diff", encode(&args.product)), None).await?;
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("{}: production already runs the latest staging version", args.product);
    }
    for c in changes {
        println!("{}: {} -> {}", c["path"].as_str().unwrap_or("?"), c["from"], c["to"]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: `90m`, `24h`, `7d` back from now, or Unix seconds.
fn since(value: &str, now: i64) -> anyhow::Result<i64> {
    let (n, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let n: i64 = n.parse().with_context(|| format!("--since `{value}`: write 90m, 24h, 7d or Unix seconds"))?;
    Ok(match unit {
        "" => n,
        "m" => now - n * 60,
        "h" => now - n * 3_600,
        "d" => now - n * 86_400,
        _ => bail!("--since `{value}`: write 90m, 24h, 7d or Unix seconds"),
    })
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let now = tollgate_store::now_millis() / 1000;
    // No `until`: the API's default counts up to the end of the current second.
    let mut query = format!(
        "product={}&metric={}&since={}&granularity={}",
        encode(&args.product),
        encode(&args.metric),
        since(&args.since, now)?,
        args.granularity
    );
    if let Some(a) = &args.application {
        query += &format!("&application={}", encode(a));
    }
    let (_, v) = admin.call("GET", &format!("/analytics/usage?{query}"), None).await?;
    let rows: Vec<(i64, i64)> = v["values"]
        .as_array()
        .map(|a| a.iter().map(|r| (r["at"].as_i64().unwrap_or(0), r["value"].as_i64().unwrap_or(0))).collect())
        .unwrap_or_default();
    let at = |t: i64| {
        let (y, m, d) = tollgate_model::period::civil_from_days(t.div_euclid(86_400));
        let s = t.rem_euclid(86_400);
        format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s / 60 % 60)
    };
    if args.csv {
        println!("at,unix,metric,value");
        for (t, value) in &rows {
            println!("{},{t},{},{value}", at(*t), args.metric);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let who = args.application.as_deref().map(|a| format!(", application {a}")).unwrap_or_default();
    println!("{} · {}{who} · per {} (UTC)", args.product, args.metric, args.granularity);
    let width = rows.iter().map(|(_, v)| v.to_string().len()).max().unwrap_or(1).max(5);
    println!("{:<16}  {:>width$}", "at", "value");
    for (t, value) in &rows {
        println!("{:<16}  {value:>width$}", at(*t));
    }
    println!("{:<16}  {:>width$}", "total", v["total"].as_i64().unwrap_or(0));
    Ok(ExitCode::SUCCESS)
}
