//! The documentation's relative links resolve: every `[text](target)` of
//! README.md, ARCHITECTURE.md and docs/*.md that is not a URL names a file
//! or directory of the repository, and its `#fragment`, if any, names a
//! heading of the Markdown file it points to (as a code host makes anchors
//! of headings).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, ARCHITECTURE.md and every Markdown file in docs/.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The targets of the inline links `[text](target)` of `text`, outside
/// fenced code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let prose = without_code_spans(line);
        let mut rest = prose.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            // `[text](<target> "title")`: the target is the first word.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.trim_matches(['<', '>']).to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// `line` with the contents of its code spans removed.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for character in line.chars() {
        if character == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(character);
        }
    }
    out
}

/// The anchors a code host makes of a Markdown file's headings: lower case,
/// punctuation other than `-` and `_` dropped, spaces as `-`, a repeated
/// anchor numbered (`-1`, `-2`, …).
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|character| match character {
                ' ' => Some('-'),
                '-' | '_' => Some(character),
                other if other.is_alphanumeric() => Some(other),
                _ => None,
            })
            .collect();
        let mut anchor = slug.clone();
        let mut count = 0;
        while anchors.contains(&anchor) {
            count += 1;
            anchor = format!("{slug}-{count}");
        }
        anchors.insert(anchor);
    }
    anchors
}

/// `base/relative`, with `.` and `..` resolved lexically.
fn resolve(base: &Path, relative: &str) -> PathBuf {
    let mut path = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => {
                path.pop();
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    path
}

/// What is wrong with each relative link of `page`.
fn broken_links(page: &Path) -> Vec<String> {
    let root = root();
    let text = std::fs::read_to_string(page).expect("page readable");
    let name = page
        .strip_prefix(&root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.is_empty()
            || target.contains("://")
            || target.starts_with("mailto:")
            || target.starts_with("man:")
        {
            continue;
        }
        let (file, fragment) = match target.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (target.as_str(), None),
        };
        let linked = if file.is_empty() {
            page.to_path_buf()
        } else {
            resolve(page.parent().expect("a page is in a directory"), file)
        };
        let relative = linked
            .strip_prefix(&root)
            .map(|path| path.display().to_string());
        let Ok(relative) = relative else {
            broken.push(format!("{name}: {target}: outside the repository"));
            continue;
        };
        if !linked.exists() {
            broken.push(format!("{name}: {target}: no such file {relative}"));
            continue;
        }
        let Some(fragment) = fragment else {
            continue;
        };
        if linked.extension().is_none_or(|extension| extension != "md") {
            continue;
        }
        let linked_text = std::fs::read_to_string(&linked).expect("linked page readable");
        if !heading_anchors(&linked_text).contains(fragment) {
            broken.push(format!(
                "{name}: {target}: {relative} has no heading #{fragment}"
            ));
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_documentation_resolves() {
    let pages = pages();
    assert!(pages.len() > 5, "{pages:?}");
    let broken: Vec<String> = pages.iter().flat_map(|page| broken_links(page)).collect();
    assert!(
        broken.is_empty(),
        "broken links in the documentation:\n{}",
        broken.join("\n")
    );
}

#[test]
fn links_and_anchors_are_read_as_a_code_host_reads_them() {
    let text = "See [a](docs/a.md#the-rest), `[not](a link)`, [b](<b.md> \"title\").\n\
                ```\n[fenced](x.md)\n```\n[c](https://example.com/x)";
    assert_eq!(
        link_targets(text),
        ["docs/a.md#the-rest", "b.md", "https://example.com/x"]
    );
    let anchors = heading_anchors(
        "# Title\n## `relayq webhook status` and `relayq webhook test`\n\
         ## Bulk operations\n### Bulk operations\n## A million (`scale.sh`)\n",
    );
    let expected: BTreeSet<String> = [
        "title",
        "relayq-webhook-status-and-relayq-webhook-test",
        "bulk-operations",
        "bulk-operations-1",
        "a-million-scalesh",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(anchors, expected);
    assert_eq!(
        resolve(Path::new("/r/docs"), "../conf/relayq.toml"),
        Path::new("/r/conf/relayq.toml")
    );
}
