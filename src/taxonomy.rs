//! The IAB Tech Lab taxonomies (DESIGN §17), compiled in from `datasets/iab/` (CC BY 3.0, see
//! its NOTICE): Content Taxonomy 3.1 and Audience Taxonomy 1.1 as one list of categories with
//! namespaced ids (`content:1` is Automotive; the two taxonomies share numbers), parents, names,
//! paths and tiers. The `Parent` column defines ancestors and the tier (depth from the root, 1
//! for a top-level category) where it and the tier columns disagree.

use std::collections::HashMap;
use std::sync::OnceLock;

const CONTENT: &str = include_str!("../datasets/iab/Content Taxonomy 3.1.tsv");
const AUDIENCE: &str = include_str!("../datasets/iab/Audience Taxonomy 1.1.tsv");

/// One category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// `content:<Unique ID>` or `audience:<Unique ID>`.
    pub id: String,
    /// The parent's id, `None` at the top.
    pub parent: Option<String>,
    pub name: String,
    /// The tiers joined with ` > `.
    pub path: String,
    /// Depth from the root by the parent chain, 1 at the top.
    pub tier: u8,
    /// `content` or `audience`.
    pub taxonomy: &'static str,
}

/// Both taxonomies, content first, each in file order, with an index by id.
pub struct Taxonomy {
    pub categories: Vec<Category>,
    by_id: HashMap<String, usize>,
}

fn cells(line: &str) -> Vec<&str> {
    line.trim_end_matches(['\r', '\n'])
        .split('\t')
        .map(str::trim)
        .collect()
}

fn read(
    text: &str,
    taxonomy: &'static str,
    skip: usize,
    first: usize,
    tiers: std::ops::Range<usize>,
    named: impl Fn(&[&str]) -> String,
) -> Vec<Category> {
    let mut out = Vec::new();
    for line in text.lines().skip(skip) {
        let c = cells(line);
        let Some(id) = c.get(first).filter(|s| !s.is_empty()) else {
            continue;
        };
        let parent = c.get(first + 1).filter(|s| !s.is_empty());
        let tier_cells: Vec<&str> = tiers
            .clone()
            .filter_map(|i| c.get(i).copied())
            .filter(|s| !s.is_empty())
            .collect();
        out.push(Category {
            id: format!("{taxonomy}:{id}"),
            parent: parent.map(|p| format!("{taxonomy}:{p}")),
            name: named(&c),
            path: tier_cells.join(" > "),
            tier: 0,
            taxonomy,
        });
    }
    out
}

impl Taxonomy {
    fn load() -> Taxonomy {
        // Content 3.1: two header lines; Unique ID, Parent, Name, Tier 1–4.
        let mut categories = read(CONTENT, "content", 2, 0, 3..7, |c| c[2].to_string());
        // Audience 1.1: one header line, a leading empty column; Unique ID, Parent ID, Condensed
        // Name, Tier 1–6; the name is the last non-empty tier.
        categories.extend(read(AUDIENCE, "audience", 1, 1, 4..10, |c| {
            (4..10)
                .rev()
                .filter_map(|i| c.get(i).copied())
                .find(|s| !s.is_empty())
                .unwrap_or("")
                .to_string()
        }));
        let by_id: HashMap<String, usize> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        // Tiers from the parent chain (bounded: a cycle in the data cannot loop).
        let tiers: Vec<u8> = (0..categories.len())
            .map(|i| {
                let mut depth = 1u8;
                let mut at = i;
                while let Some(p) = categories[at].parent.as_ref().and_then(|p| by_id.get(p)) {
                    depth += 1;
                    at = *p;
                    if depth > 32 {
                        break;
                    }
                }
                depth
            })
            .collect();
        for (c, t) in categories.iter_mut().zip(tiers) {
            c.tier = t;
        }
        Taxonomy { categories, by_id }
    }

    /// A category's position in [`Taxonomy::categories`].
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The positions of the category at `pos` and its ancestors, nearest first.
    pub fn chain(&self, pos: usize) -> Vec<u32> {
        let mut out = vec![pos as u32];
        let mut at = pos;
        while let Some(p) = self.categories[at]
            .parent
            .as_deref()
            .and_then(|p| self.position(p))
        {
            if out.len() > 32 {
                break;
            }
            out.push(p as u32);
            at = p;
        }
        out
    }

    /// A category by its id.
    pub fn get(&self, id: &str) -> Option<&Category> {
        self.by_id.get(id).map(|&i| &self.categories[i])
    }

    /// `c` and its ancestors, nearest first.
    pub fn with_ancestors<'a>(&'a self, c: &'a Category) -> Vec<&'a Category> {
        let mut out = vec![c];
        while let Some(p) = out
            .last()
            .and_then(|c| c.parent.as_deref())
            .and_then(|p| self.get(p))
        {
            if out.len() > 32 {
                break;
            }
            out.push(p);
        }
        out
    }

    /// Resolve what a user wrote: an id (`content:1`), a full path (`Automotive > Auto Parts`),
    /// or a bare name; a path or name in the content taxonomy first, then the audience one, and
    /// unique within that taxonomy (otherwise the error lists the candidates).
    pub fn resolve(&self, s: &str) -> Result<&Category, String> {
        let s = s.trim();
        if let Some(c) = self.get(s) {
            return Ok(c);
        }
        for taxonomy in ["content", "audience"] {
            for by_path in [true, false] {
                let hits: Vec<&Category> = self
                    .categories
                    .iter()
                    .filter(|c| c.taxonomy == taxonomy)
                    .filter(|c| {
                        if by_path {
                            c.path.eq_ignore_ascii_case(s)
                        } else {
                            c.name.eq_ignore_ascii_case(s)
                        }
                    })
                    .collect();
                match hits.len() {
                    0 => continue,
                    1 => return Ok(hits[0]),
                    _ => {
                        return Err(format!(
                            "category {s:?} is ambiguous in the {taxonomy} taxonomy: {}",
                            hits.iter()
                                .take(10)
                                .map(|c| format!("{} ({})", c.id, c.path))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
        }
        Err(format!(
            "no category {s:?} in the IAB content or audience taxonomy (name one by id, e.g. 'content:1', by path, e.g. 'Automotive > Auto Parts', or by name; SELECT * FROM taxonomy lists them)"
        ))
    }
}

/// The compiled-in taxonomies, parsed once.
pub fn taxonomy() -> &'static Taxonomy {
    static T: OnceLock<Taxonomy> = OnceLock::new();
    T.get_or_init(Taxonomy::load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_taxonomies_load_with_namespaced_ids_parents_and_tiers() {
        let t = taxonomy();
        let content = t
            .categories
            .iter()
            .filter(|c| c.taxonomy == "content")
            .count();
        let audience = t
            .categories
            .iter()
            .filter(|c| c.taxonomy == "audience")
            .count();
        assert_eq!((content, audience), (704, 1558));
        let auto = t.get("content:1").unwrap();
        assert_eq!(
            (auto.name.as_str(), auto.tier, auto.parent.as_deref()),
            ("Automotive", 1, None)
        );
        assert_eq!(t.get("audience:1").unwrap().name, "Demographic");
        let age = t.get("audience:3").unwrap();
        assert_eq!(age.name, "18-20");
        assert_eq!(age.path, "Demographic > Age Range > 18-20");
        assert_eq!(age.tier, 3);
        let chain: Vec<&str> = t
            .with_ancestors(age)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(chain, ["audience:3", "audience:2", "audience:1"]);
        // Every parent exists, and tiers follow parents.
        for c in &t.categories {
            if let Some(p) = &c.parent {
                assert_eq!(t.get(p).unwrap().tier + 1, c.tier, "{}", c.id);
            } else {
                assert_eq!(c.tier, 1, "{}", c.id);
            }
        }
    }

    #[test]
    fn names_paths_and_ids_resolve_content_first() {
        let t = taxonomy();
        assert_eq!(t.resolve("content:1").unwrap().name, "Automotive");
        assert_eq!(t.resolve("automotive").unwrap().id, "content:1");
        assert_eq!(
            t.resolve("Attractions > Amusement and Theme Parks")
                .unwrap()
                .id,
            "content:151"
        );
        assert_eq!(t.resolve("Demographic").unwrap().id, "audience:1");
        assert!(
            t.resolve("no such thing")
                .unwrap_err()
                .contains("no category")
        );
    }
}
