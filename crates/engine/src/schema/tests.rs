use serde_json::{json, Value};

use super::*;

/// A GBNF expression of literals, classes, groups and repetitions as a
/// regular expression, to check what it matches.
fn to_regex(expr: &str) -> regex::Regex {
    let mut out = String::from("^(?:");
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut text = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    text.push(c);
                }
                out.push_str(&regex::escape(&text));
            }
            '(' => out.push_str("(?:"),
            ' ' => {}
            c => out.push(c),
        }
    }
    out.push_str(")$");
    regex::Regex::new(&out).unwrap()
}

fn rule_body<'a>(grammar: &'a str, name: &str) -> &'a str {
    grammar
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ::= ")))
        .unwrap_or_else(|| panic!("no rule {name} in\n{grammar}"))
}

#[test]
fn integer_ranges_match_exactly_their_integers() {
    let cases = [
        (Some(0), Some(10)),
        (Some(1), Some(100)),
        (Some(-15), Some(7)),
        (Some(-900), Some(-12)),
        (Some(37), Some(1024)),
        (Some(5), None),
        (None, Some(-3)),
        (None, Some(250)),
        (Some(0), Some(0)),
        (Some(99), Some(101)),
    ];
    for (lo, hi) in cases {
        let expr = int_range(lo, hi).unwrap();
        let re = to_regex(&expr);
        for n in -1500i64..=1500 {
            let inside = lo.is_none_or(|lo| n >= lo) && hi.is_none_or(|hi| n <= hi);
            assert_eq!(
                re.is_match(&n.to_string()),
                inside,
                "{n} in {lo:?}..={hi:?}: {expr}"
            );
        }
        assert!(!re.is_match("-0") && !re.is_match("007"), "{expr}");
    }
    assert_eq!(int_range(Some(3), Some(2)), None);
}

#[test]
fn bounded_numbers_stay_within_their_bounds() {
    let cases = [
        json!({"type": "number", "minimum": 0, "maximum": 10}),
        json!({"type": "number", "minimum": -2.5, "maximum": 3.5}),
        json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
        json!({"type": "number", "minimum": 18}),
        json!({"type": "number", "maximum": -1}),
    ];
    for schema in cases {
        let grammar = schema_to_gbnf(&schema).unwrap();
        let body = rule_body(&grammar, "doc").trim_end_matches(" space");
        let re = to_regex(body);
        let lo = schema["minimum"]
            .as_f64()
            .or(schema["exclusiveMinimum"].as_f64());
        let hi = schema["maximum"]
            .as_f64()
            .or(schema["exclusiveMaximum"].as_f64());
        let exclusive = schema.get("exclusiveMinimum").is_some();
        let mut matched = 0;
        for tenths in -300i64..=300 {
            for text in [
                format!("{}", tenths / 10),
                format!("{:.1}", tenths as f64 / 10.0),
                format!("{:.2}", tenths as f64 / 10.0 + 0.05),
            ] {
                if !re.is_match(&text) {
                    continue;
                }
                matched += 1;
                let v: f64 = text.parse().unwrap();
                let above = lo.is_none_or(|lo| if exclusive { v > lo } else { v >= lo });
                let below = hi.is_none_or(|hi| if exclusive { v < hi } else { v <= hi });
                assert!(above && below, "{text} matched {schema}: {body}");
            }
        }
        assert!(matched > 5, "{schema} matched almost nothing: {body}");
        assert!(
            re.is_match("0.5") == (lo.is_none_or(|l| l < 0.5) && hi.is_none_or(|h| h > 0.5)),
            "{schema}"
        );
    }
}

#[test]
fn unsupported_keywords_are_named_with_their_place() {
    let schema = json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}});
    let err = schema_to_gbnf(&schema).unwrap_err();
    assert_eq!(err.at, "/properties/code/pattern");
    assert!(err.to_string().contains("`pattern`"), "{err}");
    let err = schema_to_gbnf(&json!({"type": "string", "format": "email"})).unwrap_err();
    assert!(err.to_string().contains("`email`"), "{err}");
    let err = schema_to_gbnf(&json!({"type": "integer", "minimum": 5, "maximum": 1})).unwrap_err();
    assert!(err.to_string().contains("no integer"), "{err}");
    assert!(schema_to_gbnf(&json!({"$ref": "https://example.com/s.json"})).is_err());
    assert!(schema_to_gbnf(&json!({"type": "wat"})).is_err());
}

#[test]
fn objects_keep_declared_order_with_optional_members() {
    let schema = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}},
        "required": ["b"]
    });
    let grammar = schema_to_gbnf(&schema).unwrap();
    let body = rule_body(&grammar, "doc");
    // "a" may come first, or "b" with "a" absent; "c" only after "b".
    assert_eq!(
        body,
        r#""{" space ( doc-a-kv doc-tail-1 | doc-b-kv doc-tail-2 ) "}" space"#
    );
    assert_eq!(
        rule_body(&grammar, "doc-tail-1"),
        r#""," space doc-b-kv doc-tail-2"#
    );
    assert_eq!(
        rule_body(&grammar, "doc-tail-2"),
        r#"( "," space doc-c-kv )?"#
    );
}

#[test]
fn recursive_refs_and_enums_convert() {
    let schema = json!({
        "$defs": {"node": {"type": "object", "properties": {
            "kind": {"enum": ["leaf", "branch"]},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}
        }, "required": ["kind"]}},
        "$ref": "#/$defs/node"
    });
    let grammar = schema_to_gbnf(&schema).unwrap();
    assert!(
        grammar.contains(r#"("\"leaf\"" | "\"branch\"") space"#),
        "{grammar}"
    );
    assert!(grammar.contains("doc-ref--defs-node ::= "), "{grammar}");
    assert!(
        grammar
            .lines()
            .any(|l| l.starts_with("root ::= doc-ref--defs-node")),
        "{grammar}"
    );
}

#[test]
fn string_literals_escape() {
    assert_eq!(gbnf_string("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    assert_eq!(literal(&json!("x")).unwrap(), r#""\"x\"""#);
}

#[test]
fn every_rule_a_grammar_uses_is_defined() {
    let schemas = [
        json!({"type": "object", "properties": {"color": {"enum": ["red", "green"]}}, "required": ["color"]}),
        json!({"const": 3}),
        json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number", "minimum": 0}}}}),
        json!({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}),
    ];
    for schema in schemas {
        let grammar = schema_to_gbnf(&schema).unwrap();
        let defined: Vec<&str> = grammar
            .lines()
            .filter_map(|l| l.split(" ::= ").next())
            .collect();
        for line in grammar.lines() {
            let body = line.split_once(" ::= ").unwrap().1;
            // Outside string literals and classes, every word is a rule name.
            let mut outside = String::new();
            let (mut in_string, mut in_class, mut escaped) = (false, false, false);
            for c in body.chars() {
                match (in_string, in_class, escaped, c) {
                    (_, _, true, _) => escaped = false,
                    (true, _, _, '\\') | (_, true, _, '\\') => escaped = true,
                    (true, _, _, '"') => in_string = false,
                    (false, false, _, '"') => in_string = true,
                    (false, false, _, '[') => in_class = true,
                    (_, true, _, ']') => in_class = false,
                    (false, false, _, c) => outside.push(c),
                    _ => {}
                }
            }
            for word in outside.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                if word.is_empty() || word.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                assert!(
                    defined.contains(&word),
                    "{word} is used but not defined in\n{grammar}"
                );
            }
        }
    }
}

#[test]
fn grammars_grow_linearly_and_repetitions_are_bounded() {
    let properties: serde_json::Map<String, Value> = (0..300)
        .map(|i| (format!("p{i}"), json!({"type": "integer"})))
        .collect();
    let grammar = schema_to_gbnf(&json!({"type": "object", "properties": properties})).unwrap();
    assert!(
        grammar.len() < 100_000,
        "{} bytes for 300 optional properties",
        grammar.len()
    );
    let long = json!({"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 5000},
        "b": {"type": "array", "items": {"type": "integer"}, "maxItems": 5000}
    }});
    let err = schema_to_gbnf(&long).unwrap_err();
    assert!(err.to_string().contains("8192"), "{err}");
}

#[test]
fn combinations_that_would_be_ignored_are_refused() {
    for schema in [
        json!({"type": []}),
        json!({"enum": ["a"], "maxLength": 3}),
        json!({"$ref": "#/$defs/x", "type": "string", "$defs": {"x": {"type": "string"}}}),
        json!({"anyOf": [{"type": "string"}], "maxLength": 2}),
        json!({"type": "array", "prefixItems": [{"type": "string"}], "minItems": 3}),
        json!({"allOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"a": {"maxLength": 2}}}]}),
        json!({"allOf": [{"type": "string"}]}),
        json!({"type": "string", "format": "date", "maxLength": 4}),
        json!({"type": "integer", "enum": ["a", "b"]}),
    ] {
        assert!(schema_to_gbnf(&schema).is_err(), "{schema}");
    }
    // Annotations beside them are fine, and enum values are kept to the type.
    let grammar = schema_to_gbnf(
        &json!({"type": "string", "enum": ["a", 1], "title": "T", "description": "d"}),
    )
    .unwrap();
    assert_eq!(rule_body(&grammar, "doc"), r#"("\"a\"") space"#);
}

#[test]
fn each_schema_keeps_its_own_refs() {
    let mut builder = GrammarBuilder::new();
    let a = json!({"$defs": {"x": {"type": "string"}}, "$ref": "#/$defs/x"});
    let b = json!({"$defs": {"x": {"type": "integer"}}, "$ref": "#/$defs/x"});
    let rule_a = builder.schema(&a, "a").unwrap();
    let rule_b = builder.schema(&b, "b").unwrap();
    assert_ne!(rule_a, rule_b);
    let grammar = builder.finish(format!("{rule_a} {rule_b}"));
    assert!(
        rule_body(&grammar, &rule_a).contains("string")
            || grammar.contains(&format!("{rule_a} ::= string")),
        "{grammar}"
    );
    assert!(
        grammar.contains(&format!("{rule_b} ::= integer")),
        "{grammar}"
    );
}
