//! `conditions`: policy conditions (`tollgate_gateway::policy::condition`): a list of
//! operations (`left` template, `op` `==` `!=` `matches` `not_matches`, `right`
//! template or regular expression) combined with `and` or `or`, compiled and evaluated
//! on a request.
//!
//! Feeds: either a JSON condition (`{"combine_op": …, "operations": […]}`) followed by a
//! NUL byte and a request head, or lines — a combine byte, then `left`, `op`, `right`
//! triples — followed by an empty line and a request head.
//!
//! Asserts, beyond "no panic":
//! - a condition compiles exactly when its negation (each `op` negated, `and` ↔ `or`)
//!   does, and then, by De Morgan, holds exactly when the negation does not;
//! - evaluation is repeatable;
//! - with one operation, `and` and `or` agree; `and` holding implies `or` holding;
//! - built through the policy registry (`condition:` on a policy), a condition is
//!   refused exactly when it does not compile on its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_gateway::policy::Registry;
use tollgate_gateway::policy::condition::{Combine, Condition, ConditionConfig, Op, OperationConfig};

fn negated(c: &ConditionConfig) -> ConditionConfig {
    ConditionConfig {
        combine_op: match c.combine_op {
            Combine::And => Combine::Or,
            Combine::Or => Combine::And,
        },
        operations: c
            .operations
            .iter()
            .map(|o| OperationConfig {
                left: o.left.clone(),
                op: match o.op {
                    Op::Eq => Op::Ne,
                    Op::Ne => Op::Eq,
                    Op::Matches => Op::NotMatches,
                    Op::NotMatches => Op::Matches,
                },
                right: o.right.clone(),
            })
            .collect(),
    }
}

fn from_lines(text: &str) -> Option<(ConditionConfig, &str)> {
    let (spec, head) = text.split_once("\n\n").unwrap_or((text, "GET /"));
    let mut lines = spec.split('\n');
    let combine_op = if lines.next()?.starts_with('o') { Combine::Or } else { Combine::And };
    let mut operations = Vec::new();
    while let (Some(left), Some(op), Some(right)) = (lines.next(), lines.next(), lines.next()) {
        let op = match op {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "matches" => Op::Matches,
            _ => Op::NotMatches,
        };
        operations.push(OperationConfig { left: left.into(), op, right: right.into() });
    }
    Some((ConditionConfig { combine_op, operations }, head))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, head) = match text.split_once('\0') {
        Some((json, head)) => match serde_json::from_str::<ConditionConfig>(json) {
            Ok(c) => (c, head),
            Err(_) => return,
        },
        None => match from_lines(text) {
            Some(found) => found,
            None => return,
        },
    };
    if config.operations.len() > 16 {
        return;
    }
    let Some(parts) = tollgate_fuzz::request_parts(head) else { return };
    let product = tollgate_fuzz::product();
    let ctx = tollgate_fuzz::context(product);

    let condition = Condition::new(config.clone());
    let negation = Condition::new(negated(&config));
    assert_eq!(condition.is_ok(), negation.is_ok(), "a condition and its negation compile differently");

    let json = serde_json::json!({
        "condition": {
            "combine_op": if config.combine_op == Combine::Or { "or" } else { "and" },
            "operations": config.operations.iter().map(|o| serde_json::json!({
                "left": o.left,
                "op": match o.op { Op::Eq => "==", Op::Ne => "!=", Op::Matches => "matches", Op::NotMatches => "not_matches" },
                "right": o.right,
            })).collect::<Vec<_>>(),
        }
    });
    let built = Registry::offline().build("policy_chain[0]", "echo", &json);
    assert_eq!(built.is_ok(), condition.is_ok(), "the registry and Condition::new disagree: {:?}", built.err());

    let (Ok(condition), Ok(negation)) = (condition, negation) else { return };
    let holds = condition.holds(&parts, &ctx);
    assert_eq!(holds, condition.holds(&parts, &ctx), "not repeatable");
    assert_eq!(holds, !negation.holds(&parts, &ctx), "De Morgan: the negation does not hold exactly when it fails");

    let with = |combine_op| {
        let c = ConditionConfig { combine_op, operations: config.operations.clone() };
        Condition::new(c).expect("compiled once already").holds(&parts, &ctx)
    };
    let (and, or) = (with(Combine::And), with(Combine::Or));
    assert!(!and || or, "`and` holds but `or` does not");
    if config.operations.len() == 1 {
        assert_eq!(and, or, "one operation: `and` and `or` differ");
    }
});
