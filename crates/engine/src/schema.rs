//! JSON Schema to GBNF: the grammars that hold JSON output and tool-call
//! arguments to a schema.
//!
//! shelf converts schemas itself rather than through llama.cpp's converter,
//! which leaves number bounds unenforced and reports failures without
//! naming the keyword. Every keyword that changes which documents are valid
//! is either enforced here or refused with [`SchemaError`] naming it; the
//! grammar may accept fewer documents than the schema (properties in their
//! declared order, no extra properties, bounded numbers without exponents),
//! never more. It knows nothing of llama.cpp or HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// A schema this converter cannot enforce, or a malformed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Where in the schema, as a JSON pointer (`/properties/age`).
    pub at: String,
    pub reason: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The place is built from the request's own keys: escaped, bounded.
        let at = match self.at.is_empty() {
            true => "/".to_string(),
            false => escape_bounded(&self.at, 200),
        };
        write!(f, "{} (at {at})", self.reason)
    }
}

/// Keywords that restrict valid documents and are not enforced: refused.
const UNSUPPORTED: [&str; 17] = [
    "pattern",
    "patternProperties",
    "not",
    "if",
    "then",
    "else",
    "multipleOf",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
];

/// String formats with a grammar.
const FORMATS: [&str; 4] = ["date", "time", "date-time", "uuid"];

/// Most repetitions (`minItems`, `maxLength`, ...) one grammar may ask for.
const MAX_REPEATS: u64 = 8192;

/// Deepest nesting followed, so a hostile schema cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

const PRIMITIVES: [(&str, &str); 10] = [
    ("space", r#"| " " | "\n" [ \t]{0,20}"#),
    ("boolean", r#"("true" | "false") space"#),
    ("null", r#""null" space"#),
    (
        "char",
        r#"[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#,
    ),
    ("string", r#""\"" char* "\"" space"#),
    ("integral-part", r#"[0] | [1-9] [0-9]{0,15}"#),
    ("integer", r#"("-"? integral-part) space"#),
    (
        "number",
        r#"("-"? integral-part) ("." [0-9]{1,16})? ([eE] [-+]? integral-part)? space"#,
    ),
    (
        "object",
        r#""{" space ( string ":" space value ("," space string ":" space value)* )? "}" space"#,
    ),
    (
        "array",
        r#""[" space ( value ("," space value)* )? "]" space"#,
    ),
];

/// Grammar rules under construction: several schemas (one per tool) can
/// share one grammar, and rules are named after where they come from.
#[derive(Debug, Default)]
pub struct GrammarBuilder {
    rules: BTreeMap<String, String>,
    /// Repetitions asked for so far (llama.cpp expands `x{m,n}` into n
    /// copies): bounded, so a schema cannot make a huge grammar.
    repeats: u64,
    /// The document `$ref`s resolve against, per schema being added.
    root: Value,
    /// The schema being added, which its `$ref` rules are named after.
    scope: String,
    /// `$ref` rules made so far, by schema and pointer.
    refs: BTreeMap<(String, String), String>,
    depth: usize,
}

impl GrammarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a rule and return its name (made unique if taken by another body).
    pub fn rule(&mut self, name: &str, body: String) -> String {
        let base: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let base = if base.is_empty() {
            "r".to_string()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 1;
        while let Some(existing) = self.rules.get(&name) {
            if *existing == body {
                return name;
            }
            n += 1;
            name = format!("{base}{n}");
        }
        self.rules.insert(name.clone(), body);
        name
    }

    /// Add a schema's rules; returns the rule that matches a valid value.
    pub fn schema(&mut self, schema: &Value, name: &str) -> Result<String, SchemaError> {
        self.root = schema.clone();
        self.scope = name.to_string();
        self.visit(schema, name, "")
    }

    /// The grammar, with `root` as its start.
    pub fn finish(mut self, root: String) -> String {
        self.rules.insert("root".into(), root);
        let mut out = String::new();
        for (name, body) in &self.rules {
            let _ = writeln!(out, "{name} ::= {body}");
        }
        out
    }

    /// A built-in rule (and the rules it uses); returns its name.
    fn primitive(&mut self, name: &str) -> String {
        if !self.rules.contains_key(name) {
            let body = match name {
                "value" => "object | array | string | number | boolean | null",
                _ => PRIMITIVES
                    .iter()
                    .find(|(primitive, _)| *primitive == name)
                    .map_or("", |(_, body)| *body),
            };
            self.rules.insert(name.to_string(), body.to_string());
            let deps: &[&str] = match name {
                "boolean" | "null" => &["space"],
                "string" => &["char", "space"],
                "integer" | "number" => &["integral-part", "space"],
                "object" => &["string", "value", "space"],
                "array" => &["value", "space"],
                "value" => &["object", "array", "string", "number", "boolean", "null"],
                _ => &[],
            };
            for dep in deps {
                self.primitive(dep);
            }
        }
        name.to_string()
    }

    fn visit(&mut self, schema: &Value, name: &str, at: &str) -> Result<String, SchemaError> {
        self.depth += 1;
        let result = match self.depth > MAX_DEPTH {
            true => Err(error(at, "the schema nests too deeply")),
            false => self.visit_inner(schema, name, at),
        };
        self.depth -= 1;
        result
    }

    fn visit_inner(&mut self, schema: &Value, name: &str, at: &str) -> Result<String, SchemaError> {
        self.primitive("space");
        let object = match schema {
            Value::Bool(true) => return Ok(self.primitive("value")),
            Value::Bool(false) => return Err(error(at, "the schema `false` matches nothing")),
            Value::Object(object) => object,
            _ => return Err(error(at, "a schema must be an object or a boolean")),
        };
        for keyword in UNSUPPORTED {
            if object.contains_key(keyword) {
                return Err(error(
                    &format!("{at}/{keyword}"),
                    &format!("the JSON Schema keyword `{keyword}` is not supported"),
                ));
            }
        }
        if let Some(reference) = object.get("$ref") {
            only_annotations_beside(object, "$ref", &[], at)?;
            return self.reference(reference, at);
        }
        if let Some(value) = object.get("const") {
            only_annotations_beside(object, "const", &["type"], at)?;
            return self.enumeration(&Value::Array(vec![value.clone()]), object, name, at);
        }
        if let Some(values) = object.get("enum") {
            only_annotations_beside(object, "enum", &["type"], at)?;
            return self.enumeration(values, object, name, at);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(options) = object.get(keyword) {
                only_annotations_beside(object, keyword, &[], at)?;
                return self.alternatives(options, name, &format!("{at}/{keyword}"));
            }
        }
        if let Some(parts) = object.get("allOf") {
            let merged = merge_all_of(object, parts, at)?;
            return self.visit(&merged, name, at);
        }
        match object.get("type") {
            Some(Value::String(kind)) => self.typed(kind, object, name, at),
            Some(Value::Array(kinds)) if kinds.is_empty() => Err(error(
                &format!("{at}/type"),
                "`type` must not be an empty list",
            )),
            Some(Value::Array(kinds)) => {
                let mut options = Vec::new();
                for (i, kind) in kinds.iter().enumerate() {
                    let kind = kind.as_str().ok_or_else(|| {
                        error(&format!("{at}/type/{i}"), "a type must be a string")
                    })?;
                    options.push(self.typed(kind, object, &format!("{name}-{kind}"), at)?);
                }
                Ok(self.rule(name, options.join(" | ")))
            }
            Some(_) => Err(error(
                &format!("{at}/type"),
                "`type` must be a string or an array",
            )),
            None if object.contains_key("properties") => self.typed("object", object, name, at),
            None if object.contains_key("items") || object.contains_key("prefixItems") => {
                self.typed("array", object, name, at)
            }
            None => Ok(self.primitive("value")),
        }
    }

    fn typed(
        &mut self,
        kind: &str,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        match kind {
            "object" => self.object(object, name, at),
            "array" => self.array(object, name, at),
            "string" => self.string(object, name, at),
            "integer" => self.integer(object, name, at),
            "number" => self.number(object, name, at),
            "boolean" | "null" => Ok(self.primitive(kind)),
            other => Err(error(
                &format!("{at}/type"),
                &format!("unknown type `{}`", escape(other)),
            )),
        }
    }

    fn reference(&mut self, reference: &Value, at: &str) -> Result<String, SchemaError> {
        let pointer = reference
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .ok_or_else(|| {
                error(
                    &format!("{at}/$ref"),
                    "only local `$ref`s (`#/...`) are supported",
                )
            })?;
        // Refs are per schema (each tool's `#/$defs/X` is its own).
        let key = (self.scope.clone(), pointer.to_string());
        if let Some(rule_name) = self.refs.get(&key) {
            return Ok(rule_name.clone());
        }
        let target = self
            .root
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| error(&format!("{at}/$ref"), "the `$ref` points at nothing"))?;
        let name = format!("{}-ref{}", self.scope, pointer.replace('/', "-"));
        let rule_name = self.unused_name(&name);
        // A placeholder first, so a recursive schema refers to itself.
        self.rules.insert(rule_name.clone(), String::new());
        self.refs.insert(key, rule_name.clone());
        let body = self.visit(&target, &format!("{name}-body"), pointer)?;
        self.rules.insert(rule_name.clone(), body);
        Ok(rule_name)
    }

    /// A rule name no rule has yet.
    fn unused_name(&self, name: &str) -> String {
        let base: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut candidate = base.clone();
        let mut n = 1;
        while self.rules.contains_key(&candidate) {
            n += 1;
            candidate = format!("{base}{n}");
        }
        candidate
    }

    /// `enum` (or `const`): the values that are also of the schema's `type`.
    fn enumeration(
        &mut self,
        values: &Value,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let values = values
            .as_array()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| error(&format!("{at}/enum"), "`enum` must be a non-empty array"))?;
        let typed = |value: &Value| match object.get("type") {
            None => true,
            Some(Value::String(kind)) => is_of_type(value, kind),
            Some(Value::Array(kinds)) => kinds
                .iter()
                .filter_map(Value::as_str)
                .any(|kind| is_of_type(value, kind)),
            Some(_) => false,
        };
        let options: Vec<String> = values
            .iter()
            .filter(|v| typed(v))
            .map(literal)
            .collect::<Result<_, _>>()?;
        if options.is_empty() {
            return Err(error(
                at,
                "no value of `enum` or `const` has the schema's `type`",
            ));
        }
        Ok(self.rule(name, format!("({}) space", options.join(" | "))))
    }

    fn alternatives(
        &mut self,
        options: &Value,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let options = options
            .as_array()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| error(at, "must be a non-empty array of schemas"))?;
        let mut rules = Vec::new();
        for (i, option) in options.iter().enumerate() {
            rules.push(self.visit(option, &format!("{name}-{i}"), &format!("{at}/{i}"))?);
        }
        Ok(self.rule(name, rules.join(" | ")))
    }

    fn object(
        &mut self,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let empty = Map::new();
        let properties = match object.get("properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(error(
                    &format!("{at}/properties"),
                    "`properties` must be an object",
                ))
            }
        };
        let required = required_names(object, at)?;
        for name in &required {
            if !properties.contains_key(name)
                && object.get("additionalProperties") == Some(&Value::Bool(false))
            {
                return Err(error(
                    &format!("{at}/required"),
                    &format!(
                        "required property `{}` is not allowed by the schema",
                        escape(name)
                    ),
                ));
            }
        }
        if properties.is_empty() && required.is_empty() {
            return match object.get("additionalProperties") {
                Some(Value::Bool(false)) => Ok(self.rule(name, r#""{" space "}" space"#.into())),
                Some(schema @ Value::Object(_)) => {
                    let value = self.visit(
                        schema,
                        &format!("{name}-additional"),
                        &format!("{at}/additionalProperties"),
                    )?;
                    let string = self.primitive("string");
                    let pair = format!(r#"{string} ":" space {value}"#);
                    Ok(self.rule(
                        name,
                        format!(r#""{{" space ({pair} ("," space {pair})*)? "}}" space"#),
                    ))
                }
                _ => Ok(self.primitive("object")),
            };
        }
        let mut members = Vec::new();
        for (key, schema) in properties {
            let value = self.visit(
                schema,
                &format!("{name}-{key}"),
                &format!("{at}/properties/{key}"),
            )?;
            let pair = self.rule(
                &format!("{name}-{key}-kv"),
                format!(
                    r#"{} space ":" space {value}"#,
                    literal(&Value::String(key.clone()))?
                ),
            );
            members.push((pair, required.contains(key)));
        }
        // Required properties a schema names but does not describe take any value.
        for key in required.iter().filter(|k| !properties.contains_key(*k)) {
            let value = self.primitive("value");
            let pair = self.rule(
                &format!("{name}-{key}-kv"),
                format!(
                    r#"{} space ":" space {value}"#,
                    literal(&Value::String(key.clone()))?
                ),
            );
            members.push((pair, true));
        }
        let body = self.members_in_order(&members, name);
        Ok(self.rule(name, format!(r#""{{" space {body} "}}" space"#)))
    }

    /// Count a repetition against the grammar's budget.
    fn spend(&mut self, min: u64, max: Option<u64>, at: &str) -> Result<(), SchemaError> {
        self.repeats += max.unwrap_or(min);
        match self.repeats > MAX_REPEATS {
            true => Err(error(
                at,
                &format!("the schema's length and item bounds add up to more than {MAX_REPEATS}"),
            )),
            false => Ok(()),
        }
    }

    /// Members in declared order, the optional ones optional, with commas
    /// wherever two are present. Rule `{name}-tail-i` is what may follow
    /// once member i-1 is decided, so the grammar grows linearly with the
    /// number of members.
    fn members_in_order(&mut self, members: &[(String, bool)], name: &str) -> String {
        if members.is_empty() {
            return String::new();
        }
        let mut tails = vec![String::new(); members.len() + 1];
        for (i, (pair, required)) in members.iter().enumerate().rev() {
            let item = format!(r#""," space {pair}"#);
            let next = &tails[i + 1];
            let body = match required {
                true => format!("{item} {next}"),
                false => format!("( {item} )? {next}"),
            };
            tails[i] = self.rule(&format!("{name}-tail-{i}"), body.trim_end().to_string());
        }
        // The first present member: member 0, or (if 0 is optional) a later
        // one with everything before it absent.
        let mut options = Vec::new();
        for (i, (pair, required)) in members.iter().enumerate() {
            options.push(format!("{pair} {}", tails[i + 1]).trim_end().to_string());
            if *required {
                break;
            }
        }
        let first = format!("( {} )", options.join(" | "));
        match members.iter().all(|(_, required)| !required) {
            true => format!("{first}?"),
            false => first,
        }
    }

    fn array(
        &mut self,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let min = count(object, "minItems", at)?.unwrap_or(0);
        let max = count(object, "maxItems", at)?;
        self.spend(min, max, at)?;
        if let Some(Value::Array(prefix)) = object.get("prefixItems") {
            let fixed = object
                .get("items")
                .is_none_or(|items| *items == Value::Bool(false))
                && min <= prefix.len() as u64
                && max.is_none_or(|max| max >= prefix.len() as u64);
            if !fixed {
                return Err(error(
                    at,
                    "`prefixItems` is supported only as a fixed tuple (no `items`, `minItems` or `maxItems` beyond it)",
                ));
            }
            let mut items = Vec::new();
            for (i, item) in prefix.iter().enumerate() {
                items.push(self.visit(
                    item,
                    &format!("{name}-{i}"),
                    &format!("{at}/prefixItems/{i}"),
                )?);
            }
            let body = items.join(r#" "," space "#);
            return Ok(self.rule(name, format!(r#""[" space {body} "]" space"#)));
        }
        let item = match object.get("items") {
            None => self.primitive("value"),
            Some(schema) => self.visit(schema, &format!("{name}-item"), &format!("{at}/items"))?,
        };
        if max.is_some_and(|max| max < min) {
            return Err(error(at, "`maxItems` is below `minItems`"));
        }
        let list = repetition(&item, min, max, r#" "," space "#);
        Ok(self.rule(name, format!(r#""[" space {list} "]" space"#)))
    }

    fn string(
        &mut self,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        if let Some(format) = object.get("format") {
            let format = format.as_str().unwrap_or_default();
            if !FORMATS.contains(&format) {
                return Err(error(
                    &format!("{at}/format"),
                    &format!(
                        "string format `{}` is not supported (supported: {})",
                        escape(format),
                        FORMATS.join(", ")
                    ),
                ));
            }
            if object.contains_key("minLength") || object.contains_key("maxLength") {
                return Err(error(
                    at,
                    "`minLength`/`maxLength` beside `format` is not supported",
                ));
            }
            return Ok(self.format(format, name));
        }
        let min = count(object, "minLength", at)?.unwrap_or(0);
        let max = count(object, "maxLength", at)?;
        self.spend(min, max, at)?;
        if min == 0 && max.is_none() {
            return Ok(self.primitive("string"));
        }
        if max.is_some_and(|max| max < min) {
            return Err(error(at, "`maxLength` is below `minLength`"));
        }
        self.primitive("string");
        let chars = repetition("char", min, max, "");
        Ok(self.rule(name, format!(r#""\"" {chars} "\"" space"#)))
    }

    fn format(&mut self, format: &str, name: &str) -> String {
        self.primitive("space");
        let digits = |n: usize| format!("[0-9]{{{n}}}");
        let date = format!(
            r#"{} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#,
            digits(4)
        );
        let time = r#"( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#.to_string();
        let hex = |n: usize| format!("[0-9a-fA-F]{{{n}}}");
        let body = match format {
            "date" => date,
            "time" => time,
            "date-time" => format!(r#"{date} "T" {time}"#),
            _ => format!(
                r#"{} "-" {} "-" {} "-" {} "-" {}"#,
                hex(8),
                hex(4),
                hex(4),
                hex(4),
                hex(12)
            ),
        };
        self.rule(name, format!(r#""\"" {body} "\"" space"#))
    }

    fn integer(
        &mut self,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let bounds = Bounds::read(object, at)?;
        if bounds.is_open() {
            return Ok(self.primitive("integer"));
        }
        self.primitive("space");
        let (lo, hi) = bounds.integers();
        let range =
            int_range(lo, hi).ok_or_else(|| error(at, "no integer satisfies the bounds"))?;
        Ok(self.rule(name, format!("({range}) space")))
    }

    /// A bounded number: integers within the bounds, or a fraction whose
    /// whole part keeps every value of the fraction within them.
    fn number(
        &mut self,
        object: &Map<String, Value>,
        name: &str,
        at: &str,
    ) -> Result<String, SchemaError> {
        let bounds = Bounds::read(object, at)?;
        if bounds.is_open() {
            return Ok(self.primitive("number"));
        }
        self.primitive("space");
        let (lo, hi) = bounds.integers();
        let mut options = Vec::new();
        if let Some(range) = int_range(lo, hi) {
            options.push(format!("({range})"));
        }
        let fraction = r#""." [0-9]{0,15} [1-9]"#;
        // Non-negative p.f lies in (p, p+1): p >= ceil(lo), p + 1 <= hi.
        let positive_hi = bounds.hi.map(|hi| hi.floor() as i64 - 1);
        let positive_lo = bounds.lo.map_or(0, |lo| (lo.ceil() as i64).max(0));
        if let Some(range) = int_range(Some(positive_lo), positive_hi) {
            options.push(format!("({range}) {fraction}"));
        }
        // -m.f lies in (-(m+1), -m): m >= -hi, m + 1 <= -lo.
        let magnitude_lo = bounds.hi.map_or(0, |hi| ((-hi).ceil() as i64).max(0));
        let magnitude_hi = bounds.lo.map(|lo| (-lo).floor() as i64 - 1);
        if let Some(range) = int_range(Some(magnitude_lo), magnitude_hi) {
            options.push(format!(r#""-" ({range}) {fraction}"#));
        }
        if options.is_empty() {
            return Err(error(at, "no number satisfies the bounds"));
        }
        Ok(self.rule(name, format!("({}) space", options.join(" | "))))
    }
}

/// Numeric bounds, inclusive and exclusive folded into one pair.
struct Bounds {
    lo: Option<f64>,
    hi: Option<f64>,
    lo_exclusive: bool,
    hi_exclusive: bool,
}

/// Beyond this, bounds are too large for the digit grammar (and for i64).
const LIMIT: f64 = 1e15;

impl Bounds {
    fn read(object: &Map<String, Value>, at: &str) -> Result<Self, SchemaError> {
        let get = |key: &str| -> Result<Option<f64>, SchemaError> {
            match object.get(key) {
                None => Ok(None),
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(v) if v.abs() <= LIMIT => Ok(Some(v)),
                    _ => Err(error(&format!("{at}/{key}"), "is too large to enforce")),
                },
                // Draft 4's boolean exclusive bounds are read below.
                Some(Value::Bool(_)) if key.starts_with("exclusive") => Ok(None),
                Some(_) => Err(error(&format!("{at}/{key}"), "must be a number")),
            }
        };
        let draft4 = |key: &str| object.get(key) == Some(&Value::Bool(true));
        let (mut lo, mut hi) = (get("minimum")?, get("maximum")?);
        let (mut lo_exclusive, mut hi_exclusive) =
            (draft4("exclusiveMinimum"), draft4("exclusiveMaximum"));
        if let Some(v) = get("exclusiveMinimum")? {
            if lo.is_none_or(|lo| v >= lo) {
                (lo, lo_exclusive) = (Some(v), true);
            }
        }
        if let Some(v) = get("exclusiveMaximum")? {
            if hi.is_none_or(|hi| v <= hi) {
                (hi, hi_exclusive) = (Some(v), true);
            }
        }
        Ok(Self {
            lo,
            hi,
            lo_exclusive,
            hi_exclusive,
        })
    }

    fn is_open(&self) -> bool {
        self.lo.is_none() && self.hi.is_none()
    }

    /// The smallest and largest integers within the bounds.
    fn integers(&self) -> (Option<i64>, Option<i64>) {
        let lo = self.lo.map(|lo| {
            let up = lo.ceil();
            (if self.lo_exclusive && up == lo {
                up + 1.0
            } else {
                up
            }) as i64
        });
        let hi = self.hi.map(|hi| {
            let down = hi.floor();
            (if self.hi_exclusive && down == hi {
                down - 1.0
            } else {
                down
            }) as i64
        });
        (lo, hi)
    }
}

/// The names in `required`.
fn required_names(object: &Map<String, Value>, at: &str) -> Result<Vec<String>, SchemaError> {
    match object.get("required") {
        None => Ok(Vec::new()),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| error(&format!("{at}/required"), "must list property names"))
            })
            .collect(),
        Some(_) => Err(error(&format!("{at}/required"), "must be an array")),
    }
}

/// `item` repeated `min..=max` times, separated by `separator`.
fn repetition(item: &str, min: u64, max: Option<u64>, separator: &str) -> String {
    if separator.is_empty() {
        return match max {
            Some(max) => format!("{item}{{{min},{max}}}"),
            None => format!("{item}{{{min},}}"),
        };
    }
    let rest = |n_min: u64, n_max: Option<u64>| match n_max {
        Some(n_max) => format!("({separator} {item}){{{n_min},{n_max}}}"),
        None => format!("({separator} {item}){{{n_min},}}"),
    };
    match (min, max) {
        (_, Some(0)) => String::new(),
        (0, max) => format!("( {item} {} )?", rest(0, max.map(|m| m - 1))),
        (min, max) => format!("{item} {}", rest(min - 1, max.map(|m| m - 1))),
    }
}

/// Keywords that describe a schema without changing what is valid.
const ANNOTATIONS: [&str; 11] = [
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "deprecated",
    "readOnly",
];

/// Refuse keywords beside `keyword` that it would silently override.
fn only_annotations_beside(
    object: &Map<String, Value>,
    keyword: &str,
    also: &[&str],
    at: &str,
) -> Result<(), SchemaError> {
    let other = object.keys().find(|key| {
        key.as_str() != keyword
            && !ANNOTATIONS.contains(&key.as_str())
            && !also.contains(&key.as_str())
    });
    match other {
        Some(key) => Err(error(
            &format!("{at}/{key}"),
            &format!("`{}` beside `{keyword}` is not supported", escape(key)),
        )),
        None => Ok(()),
    }
}

fn is_of_type(value: &Value, kind: &str) -> bool {
    match kind {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => false,
    }
}

/// Merge `allOf` object schemas into one (properties and required
/// combined); anything else in it is refused.
fn merge_all_of(
    object: &Map<String, Value>,
    parts: &Value,
    at: &str,
) -> Result<Value, SchemaError> {
    let parts = parts
        .as_array()
        .ok_or_else(|| error(&format!("{at}/allOf"), "must be an array of schemas"))?;
    let mut merged = object.clone();
    merged.remove("allOf");
    let mut properties = match merged.remove("properties") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    let mut required: Vec<Value> = match merged.remove("required") {
        Some(Value::Array(r)) => r,
        _ => Vec::new(),
    };
    for (i, part) in parts.iter().enumerate() {
        let part = part.as_object().filter(|p| {
            p.keys().all(|k| {
                matches!(
                    k.as_str(),
                    "type"
                        | "properties"
                        | "required"
                        | "additionalProperties"
                        | "description"
                        | "title"
                )
            })
        });
        let part = part.ok_or_else(|| {
            error(
                &format!("{at}/allOf/{i}"),
                "`allOf` is supported only for object schemas with properties",
            )
        })?;
        let not_object = part
            .get("type")
            .is_some_and(|t| t != &Value::String("object".into()));
        if not_object {
            return Err(error(
                &format!("{at}/allOf/{i}/type"),
                "`allOf` is supported only for object schemas",
            ));
        }
        if let Some(Value::Object(p)) = part.get("properties") {
            // Two parts constraining one property would need their
            // intersection; refused rather than one silently winning.
            if let Some(key) = p.keys().find(|key| properties.contains_key(*key)) {
                return Err(error(
                    &format!("{at}/allOf/{i}/properties/{key}"),
                    "a property constrained by two `allOf` parts is not supported",
                ));
            }
            properties.extend(p.clone());
        }
        if let Some(Value::Array(r)) = part.get("required") {
            required.extend(r.iter().cloned());
        }
    }
    merged.insert("type".into(), Value::String("object".into()));
    merged.insert("properties".into(), Value::Object(properties));
    merged.insert("required".into(), Value::Array(required));
    Ok(Value::Object(merged))
}

/// A non-negative count keyword (`minItems`, `maxLength`, ...).
fn count(object: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, SchemaError> {
    match object.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= 100_000)
            .map(Some)
            .ok_or_else(|| {
                error(
                    &format!("{at}/{key}"),
                    "must be a whole number up to 100000",
                )
            }),
    }
}

/// A JSON value as a GBNF string literal matching its compact serialization.
pub fn literal(value: &Value) -> Result<String, SchemaError> {
    let json = serde_json::to_string(value).map_err(|e| error("", &e.to_string()))?;
    Ok(gbnf_string(&json))
}

/// Text as a GBNF string literal.
pub fn gbnf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// GBNF for the integers in `[lo, hi]` (either side open); `None` if empty.
pub fn int_range(lo: Option<i64>, hi: Option<i64>) -> Option<String> {
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo > hi {
            return None;
        }
    }
    let mut options = Vec::new();
    // Negative values: "-" and a magnitude.
    if lo.is_none_or(|lo| lo < 0) {
        let magnitude_lo = hi.map_or(1, |hi| if hi < 0 { -hi } else { 1 });
        let magnitude_hi = lo.map(|lo| -lo);
        options.push(format!(
            r#""-" ({})"#,
            natural_range(magnitude_lo, magnitude_hi)
        ));
    }
    if hi.is_none_or(|hi| hi >= 0) {
        options.push(natural_range(lo.unwrap_or(0).max(0), hi));
    }
    Some(options.join(" | "))
}

/// Non-negative integers in `[lo, hi]` (hi open when `None`), as GBNF.
fn natural_range(lo: i64, hi: Option<i64>) -> String {
    let lo_digits = digits(lo);
    let mut options = Vec::new();
    let top_digits = hi.map_or(lo_digits, digits);
    for n in lo_digits..=top_digits {
        let start = if n == lo_digits {
            lo
        } else {
            10i64.pow(n as u32 - 1)
        };
        let end = match hi {
            Some(hi) if n == top_digits => hi,
            _ => 10i64.pow(n as u32) - 1,
        };
        if start <= end {
            options.extend(same_length(&start.to_string(), &end.to_string()));
        }
    }
    if hi.is_none() {
        // Any number with more digits than `lo`.
        options.push(format!("[1-9] [0-9]{{{lo_digits},15}}"));
    }
    options.join(" | ")
}

fn digits(n: i64) -> usize {
    n.max(0).to_string().len()
}

/// Alternatives matching the numbers from `lo` to `hi`, both `n` digits.
fn same_length(lo: &str, hi: &str) -> Vec<String> {
    let (lo, hi) = (lo.as_bytes(), hi.as_bytes());
    if lo.is_empty() {
        return vec![String::new()];
    }
    let rest = lo.len() - 1;
    let any = |n: usize| match n {
        0 => String::new(),
        n => format!(" [0-9]{{{n}}}"),
    };
    let all = |s: &[u8], d: u8| s.iter().all(|&c| c == d);
    let (a, b) = (lo[0] as char, hi[0] as char);
    if a == b {
        return same_length(as_str(&lo[1..]), as_str(&hi[1..]))
            .into_iter()
            .map(|tail| format!("\"{a}\"{}", prefixed(&tail)))
            .collect();
    }
    if all(&lo[1..], b'0') && all(&hi[1..], b'9') {
        return vec![format!("[{a}-{b}]{}", any(rest))];
    }
    let mut options: Vec<String> = same_length(as_str(&lo[1..]), &"9".repeat(rest))
        .into_iter()
        .map(|tail| format!("\"{a}\"{}", prefixed(&tail)))
        .collect();
    let (mid_lo, mid_hi) = (lo[0] + 1, hi[0] - 1);
    if mid_lo <= mid_hi {
        options.push(format!(
            "[{}-{}]{}",
            mid_lo as char,
            mid_hi as char,
            any(rest)
        ));
    }
    options.extend(
        same_length(&"0".repeat(rest), as_str(&hi[1..]))
            .into_iter()
            .map(|tail| format!("\"{b}\"{}", prefixed(&tail))),
    );
    options
}

fn prefixed(tail: &str) -> String {
    match tail.is_empty() {
        true => String::new(),
        false => format!(" ({tail})"),
    }
}

fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

fn error(at: &str, reason: &str) -> SchemaError {
    SchemaError {
        at: at.to_string(),
        reason: reason.to_string(),
    }
}

/// Request text in an error: control characters escaped, at most `max` characters.
fn escape_bounded(text: &str, max: usize) -> String {
    let escaped: String = text.chars().flat_map(char::escape_default).collect();
    match escaped.chars().count() > max {
        true => escaped.chars().take(max).chain("…".chars()).collect(),
        false => escaped,
    }
}

/// User text quoted in an error: control characters escaped, length capped.
fn escape(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// The grammar for a whole document following `schema`.
pub fn schema_to_gbnf(schema: &Value) -> Result<String, SchemaError> {
    let mut builder = GrammarBuilder::new();
    let root = builder.schema(schema, "doc")?;
    Ok(builder.finish(root))
}

/// The grammar for any JSON object (`response_format: json_object`).
pub fn any_object_gbnf() -> String {
    let mut builder = GrammarBuilder::new();
    let object = builder.primitive("object");
    builder.finish(object)
}

#[cfg(test)]
mod tests;
