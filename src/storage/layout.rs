//! Directory templates such as `{date}/{dataset}/tenant={tenant}`: how exports are laid out.
//!
//! One template both finds existing objects (planning lists [`Template::static_prefix`] and
//! keeps what [`Template::match_dir`] accepts) and names new ones ([`Template::render`]), so
//! lethe writes back exactly where the platform's own export put the data. Rendering is where
//! tenant ids become paths, so it is where they are validated.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::validate_tenant_id;

/// A parsed directory template: `/`-separated segments of literal text and `{name}`
/// placeholders. Objects live *under* the directory a template names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Vec<Piece>>,
    placeholders: Vec<String>,
    static_prefix: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(String),
}

impl Template {
    /// Parses a template. Placeholders are identifiers (`[A-Za-z_][A-Za-z0-9_]*`), each used
    /// once; two placeholders must be separated by literal text so a path splits one way only.
    pub fn parse(template: &str) -> Result<Template, String> {
        let trimmed = template.strip_suffix('/').unwrap_or(template);
        if trimmed.is_empty() {
            return Err("the layout template is empty".into());
        }
        if trimmed.starts_with('/') {
            return Err(format!(
                "layout template `{template}` starts with '/'; templates are relative to the location"
            ));
        }
        let mut segments = Vec::new();
        let mut placeholders: Vec<String> = Vec::new();
        for segment in trimmed.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(format!(
                    "layout template `{template}` has an empty, '.' or '..' directory"
                ));
            }
            let pieces =
                parse_segment(segment).map_err(|e| format!("layout template `{template}`: {e}"))?;
            for piece in &pieces {
                if let Piece::Var(name) = piece {
                    if placeholders.contains(name) {
                        return Err(format!(
                            "layout template `{template}` uses {{{name}}} twice"
                        ));
                    }
                    placeholders.push(name.clone());
                }
            }
            segments.push(pieces);
        }
        let static_prefix = match trimmed.find('{') {
            Some(i) => trimmed[..i].to_owned(),
            // No placeholder: the whole template names one directory, list under it.
            None => format!("{trimmed}/"),
        };
        Ok(Template {
            source: template.to_owned(),
            segments,
            placeholders,
            static_prefix,
        })
    }

    /// The placeholder names, in template order.
    pub fn placeholders(&self) -> &[String] {
        &self.placeholders
    }

    /// The literal text before the first placeholder (`incremental/` for
    /// `incremental/{date}/...`, `` for `{date}/...`): the prefix to list to find candidates.
    pub fn static_prefix(&self) -> &str {
        &self.static_prefix
    }

    /// Matches an object path relative to the location: the placeholder values and the rest of
    /// the path below the template's directories (a file name or deeper sub-path).
    ///
    /// `None` when the path does not fit the template or nothing lies below its directories.
    /// Values are not validated here; [`Template::render`] checks them when a path is built.
    pub fn match_dir(&self, rel_path: &str) -> Option<(BTreeMap<String, String>, String)> {
        let mut parts = rel_path.splitn(self.segments.len() + 1, '/');
        let mut vars = Vec::new();
        for pieces in &self.segments {
            let part = parts.next()?;
            if !match_pieces(pieces, part, &mut vars) {
                return None;
            }
        }
        let rest = parts.next().filter(|r| !r.is_empty())?;
        Some((vars.into_iter().collect(), rest.to_owned()))
    }

    /// The directory for `vars` (no trailing slash). Every placeholder needs a non-empty value
    /// without '/', '\\', '..' or control characters; `tenant` must be a valid tenant id.
    /// Extra entries in `vars` are ignored.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        for (i, pieces) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            for piece in pieces {
                match piece {
                    Piece::Literal(text) => out.push_str(text),
                    Piece::Var(name) => {
                        let value = vars.get(name).ok_or_else(|| {
                            format!("layout `{}` needs a value for {{{name}}}", self.source)
                        })?;
                        check_value(name, value)?;
                        out.push_str(value);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Placeholders of `self` missing from `available`, for validating a spec up front.
    pub fn missing_placeholders<'a>(&'a self, available: &BTreeSet<&str>) -> Vec<&'a str> {
        self.placeholders
            .iter()
            .map(String::as_str)
            .filter(|p| !available.contains(p))
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_segment(segment: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Literal(rest.to_owned()));
                rest = "";
            }
            Some(i) if rest[i..].starts_with('}') => {
                return Err(format!("unmatched '}}' in `{segment}`"));
            }
            Some(i) => {
                if i > 0 {
                    pieces.push(Piece::Literal(rest[..i].to_owned()));
                } else if matches!(pieces.last(), Some(Piece::Var(_))) {
                    return Err(format!(
                        "placeholders in `{segment}` must be separated by literal text"
                    ));
                }
                let after = &rest[i + 1..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in `{segment}`"))?;
                let name = &after[..end];
                if !is_identifier(name) {
                    return Err(format!(
                        "placeholder {{{name}}} is not a name (letters, digits and '_', not starting with a digit)"
                    ));
                }
                pieces.push(Piece::Var(name.to_owned()));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(pieces)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Backtracking match of one segment; placeholders take the shortest non-empty value that
/// lets the rest match.
fn match_pieces(pieces: &[Piece], text: &str, vars: &mut Vec<(String, String)>) -> bool {
    match pieces.split_first() {
        None => text.is_empty(),
        Some((Piece::Literal(lit), rest)) => text
            .strip_prefix(lit.as_str())
            .is_some_and(|t| match_pieces(rest, t, vars)),
        Some((Piece::Var(name), [])) => {
            if text.is_empty() {
                return false;
            }
            vars.push((name.clone(), text.to_owned()));
            true
        }
        Some((Piece::Var(name), rest)) => {
            for (end, _) in text.char_indices().skip(1) {
                vars.push((name.clone(), text[..end].to_owned()));
                if match_pieces(rest, &text[end..], vars) {
                    return true;
                }
                vars.pop();
            }
            false
        }
    }
}

fn check_value(name: &str, value: &str) -> Result<(), String> {
    if name == "tenant" {
        return validate_tenant_id(value);
    }
    if value.is_empty() {
        return Err(format!("the value for {{{name}}} is empty"));
    }
    if value.contains(['/', '\\']) || value.contains("..") || value.chars().any(char::is_control) {
        return Err(format!(
            "the value for {{{name}}} contains '/', '\\', '..' or a control character"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_placeholders_and_static_prefix() {
        let t = Template::parse("{date}/{dataset}/tenant={tenant}").unwrap();
        assert_eq!(t.placeholders(), ["date", "dataset", "tenant"]);
        assert_eq!(t.static_prefix(), "");
        let t = Template::parse("incremental/{date}/{dataset}/tenant={tenant}").unwrap();
        assert_eq!(t.static_prefix(), "incremental/");
        assert_eq!(
            t.to_string(),
            "incremental/{date}/{dataset}/tenant={tenant}"
        );
        let t = Template::parse("tenant={tenant}/x").unwrap();
        assert_eq!(t.static_prefix(), "tenant=");
        let t = Template::parse("fixed/dir/").unwrap();
        assert_eq!(t.static_prefix(), "fixed/dir/");
        assert!(t.placeholders().is_empty());
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "", "/abs/{x}", "a//{x}", "../{x}", "{x", "x}", "{}", "{1x}", "{a-b}", "{a}{b}",
            "{a}/{a}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn matches_objects_under_the_directory() {
        let t = Template::parse("incremental/{date}/{dataset}/tenant={tenant}").unwrap();
        let (v, rest) = t
            .match_dir("incremental/2024-05-01/emails/tenant=acme/part-0.csv.gz")
            .unwrap();
        assert_eq!(
            v,
            vars(&[
                ("date", "2024-05-01"),
                ("dataset", "emails"),
                ("tenant", "acme")
            ])
        );
        assert_eq!(rest, "part-0.csv.gz");
        let (_, rest) = t
            .match_dir("incremental/d/ds/tenant=t/sub/dir/f.parquet")
            .unwrap();
        assert_eq!(rest, "sub/dir/f.parquet");
        // The directory itself, wrong literals, missing values: no match.
        assert_eq!(t.match_dir("incremental/d/ds/tenant=t"), None);
        assert_eq!(t.match_dir("incremental/d/ds/tenant=t/"), None);
        assert_eq!(t.match_dir("full/d/ds/tenant=t/f"), None);
        assert_eq!(t.match_dir("incremental/d/ds/owner=t/f"), None);
        assert_eq!(t.match_dir("incremental/d/ds/tenant=/f"), None);
        assert_eq!(t.match_dir("incremental/d/ds"), None);
    }

    #[test]
    fn matches_several_placeholders_in_a_segment() {
        let t = Template::parse("{year}-{month}.d/{x}").unwrap();
        let (v, rest) = t.match_dir("2024-05-x.d/a/f").unwrap();
        assert_eq!(v, vars(&[("month", "05-x"), ("x", "a"), ("year", "2024")]));
        assert_eq!(rest, "f");
    }

    #[test]
    fn render_round_trips_with_match() {
        let t = Template::parse("{date}/{dataset}/tenant={tenant}").unwrap();
        let v = vars(&[
            ("date", "2024-05-01"),
            ("dataset", "emails"),
            ("tenant", "acme"),
        ]);
        let dir = t.render(&v).unwrap();
        assert_eq!(dir, "2024-05-01/emails/tenant=acme");
        let (back, rest) = t.match_dir(&format!("{dir}/f.csv")).unwrap();
        assert_eq!((back, rest.as_str()), (v, "f.csv"));
    }

    #[test]
    fn render_validates_values() {
        let t = Template::parse("{date}/tenant={tenant}").unwrap();
        let ok = |d: &str, tenant: &str| t.render(&vars(&[("date", d), ("tenant", tenant)]));
        assert!(ok("2024", "acme").is_ok());
        assert!(ok("2024", "../other").is_err());
        assert!(ok("2024", ".hidden").is_err());
        assert!(ok("2024", "a/b").is_err());
        assert!(ok("20/24", "acme").is_err());
        assert!(ok("..", "acme").is_err());
        assert!(ok("a..b", "acme").is_err());
        assert!(ok("", "acme").is_err());
        assert!(ok("a\\b", "acme").is_err());
        let missing = t.render(&vars(&[("date", "2024")])).unwrap_err();
        assert!(missing.contains("{tenant}"), "{missing}");
    }

    #[test]
    fn reports_missing_placeholders() {
        let t = Template::parse("{date}/{dataset}/tenant={tenant}").unwrap();
        let available: BTreeSet<&str> = ["date", "tenant"].into_iter().collect();
        assert_eq!(t.missing_placeholders(&available), ["dataset"]);
    }
}
