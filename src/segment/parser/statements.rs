//! segdb's own statements: segment, trait and export DDL, refreshes and exports, erasure and
//! table maintenance. The leading keywords decide whether a statement is segdb's (see
//! [`Parser::at_statement`]); everything else goes to DataFusion's parser.

use sqlparser::tokenizer::Token;

use super::super::ast::*;
use super::super::schedule;
use super::{ParseError, Parser};
use crate::storage::settings::PiiRule;

impl Parser<'_> {
    /// Do the leading keywords start a segdb statement?
    pub(super) fn at_statement(&self) -> bool {
        let kw = |j: usize, k: &str| self.is_kw_at(j, k);
        if kw(0, "CREATE") {
            let mut j = 1;
            if kw(j, "OR") && kw(j + 1, "REPLACE") {
                j += 2;
            }
            if kw(j, "MATERIALIZED") {
                j += 1;
            }
            return kw(j, "SEGMENT")
                || kw(j, "TRAIT")
                || kw(j, "EXPORT")
                || kw(j, "SOURCE")
                || (kw(j, "CATEGORY") && kw(j + 1, "MAP"));
        }
        if kw(0, "DROP") {
            return kw(1, "SEGMENT")
                || kw(1, "TRAIT")
                || kw(1, "EXPORT")
                || kw(1, "SOURCE")
                || (kw(1, "CATEGORY") && kw(2, "MAP"));
        }
        if kw(0, "SHOW") {
            return kw(1, "SEGMENTS")
                || kw(1, "TRAITS")
                || kw(1, "EXPORTS")
                || kw(1, "SOURCES")
                || (kw(1, "CATEGORY") && kw(2, "MAPS"));
        }
        if kw(0, "DESCRIBE") || kw(0, "EXPLAIN") {
            return kw(1, "SEGMENT");
        }
        if kw(0, "ALTER") {
            return kw(1, "SEGMENT")
                || kw(1, "DATABASE")
                || kw(1, "SOURCE")
                || kw(1, "EXPORT")
                || (kw(1, "TABLE")
                    && ((kw(3, "SET") && (kw(4, "PII") || kw(4, "RETENTION")))
                        || (kw(3, "RESET") && kw(4, "RETENTION"))
                        || kw(3, "ALTER")));
        }
        (kw(0, "REFRESH") || kw(0, "EXPORT")) && kw(1, "SEGMENT")
            || kw(0, "FORGET")
            || kw(0, "VACUUM")
            || kw(0, "OPTIMIZE")
    }

    fn if_not_exists(&mut self) -> Result<bool, ParseError> {
        if self.eat_kw("IF") {
            self.expect_kw("NOT")?;
            self.expect_kw("EXISTS")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn if_exists(&mut self) -> Result<bool, ParseError> {
        if self.eat_kw("IF") {
            self.expect_kw("EXISTS")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn purposes(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect_kw("PURPOSE")?;
        let mut v = vec![self.string("a purpose")?];
        while self.eat_punct(&Token::Comma) {
            v.push(self.string("a purpose")?);
        }
        Ok(v)
    }

    fn refresh(&mut self) -> Result<Refresh, ParseError> {
        let pos = self.pos_at(self.i);
        let r = if self.eat_kw("EVERY") {
            let s = self.string("an interval such as '1 hour'")?;
            let micros =
                schedule::parse_interval(&s).map_err(|m| ParseError { message: m, pos })?;
            Refresh::Every(s, micros)
        } else if self.eat_kw("CRON") {
            let expr = self.string("a cron expression such as '0 * * * *'")?;
            let tz = if self.eat_kw("TIMEZONE") {
                Some(self.string("a time zone such as 'Europe/Berlin'")?)
            } else {
                None
            };
            Refresh::Cron { expr, tz }
        } else if self.eat_kw("MANUAL") {
            Refresh::Manual
        } else if self.eat_kw("LIVE") {
            Refresh::Live
        } else {
            return Err(self.error_here("expected EVERY, CRON, LIVE or MANUAL"));
        };
        schedule::validate(&r).map_err(|m| ParseError { message: m, pos })?;
        Ok(r)
    }

    fn keep(&mut self) -> Result<u64, ParseError> {
        let pos = self.pos_at(self.i);
        let n = self.number("how many versions to keep")?;
        if !(self.eat_kw("VERSIONS") || self.eat_kw("VERSION")) {
            return Err(self.error_here("expected VERSIONS"));
        }
        if n == 0 {
            return Err(ParseError {
                message: "KEEP 0 VERSIONS would keep no history; keep at least 1".into(),
                pos,
            });
        }
        Ok(n)
    }

    /// Parse one statement (after [`Parser::at_statement`]).
    pub(super) fn statement(&mut self) -> Result<Statement, ParseError> {
        if self.eat_kw("CREATE") {
            let or_replace = if self.eat_kw("OR") {
                self.expect_kw("REPLACE")?;
                true
            } else {
                false
            };
            let materialized = self.eat_kw("MATERIALIZED");
            if self.eat_kw("TRAIT") {
                if materialized {
                    return Err(self.error_at(0, "traits are not materialised on their own; they are computed where they are read (and at the refresh of a materialised segment that uses them)"));
                }
                return self.create_trait(or_replace).map(Statement::CreateTrait);
            }
            if self.eat_kw("SOURCE") {
                if or_replace || materialized {
                    return Err(self.error_at(0, "expected CREATE SOURCE name [COMMENT '…']"));
                }
                let if_not_exists = self.if_not_exists()?;
                let name = self.name("a source name")?;
                let comment = if self.eat_kw("COMMENT") {
                    Some(self.string("a comment")?)
                } else {
                    None
                };
                return Ok(Statement::CreateSource {
                    name,
                    if_not_exists,
                    comment,
                });
            }
            if self.is_kw("CATEGORY") {
                self.i += 1;
                self.expect_kw("MAP")?;
                if or_replace || materialized {
                    return Err(self.error_at(
                        0,
                        "expected CREATE CATEGORY MAP name FROM EVENT PROPERTY column",
                    ));
                }
                let if_not_exists = self.if_not_exists()?;
                let name = self.name("a category map name")?;
                self.expect_kw("FROM")?;
                self.expect_kw("EVENT")?;
                self.expect_kw("PROPERTY")?;
                let property = self.name("an event property (a column of events)")?;
                return Ok(Statement::CreateCategoryMap {
                    name,
                    property,
                    if_not_exists,
                });
            }
            if self.eat_kw("EXPORT") {
                if or_replace || materialized {
                    return Err(self.error_at(0, "expected CREATE EXPORT name FOR SEGMENT …"));
                }
                return self.create_export();
            }
            self.expect_kw("SEGMENT")?;
            return self.create_segment(or_replace, materialized);
        }
        if self.eat_kw("DROP") {
            if self.eat_kw("CATEGORY") {
                self.expect_kw("MAP")?;
                let if_exists = self.if_exists()?;
                let name = self.name("a category map name")?;
                return Ok(Statement::DropCategoryMap { name, if_exists });
            }
            if self.eat_kw("SOURCE") {
                let if_exists = self.if_exists()?;
                let name = self.name("a source name")?;
                return Ok(Statement::DropSource { name, if_exists });
            }
            let what = if self.eat_kw("SEGMENT") {
                0
            } else if self.eat_kw("TRAIT") {
                1
            } else {
                self.expect_kw("EXPORT")?;
                2
            };
            let if_exists = self.if_exists()?;
            let name = self.name("a name")?;
            return Ok(match what {
                0 => Statement::DropSegment { name, if_exists },
                1 => Statement::DropTrait { name, if_exists },
                _ => Statement::DropExport { name, if_exists },
            });
        }
        if self.eat_kw("SHOW") {
            if self.eat_kw("SEGMENTS") {
                return Ok(Statement::ShowSegments);
            }
            if self.eat_kw("TRAITS") {
                return Ok(Statement::ShowTraits);
            }
            if self.eat_kw("SOURCES") {
                return Ok(Statement::ShowSources);
            }
            if self.eat_kw("CATEGORY") {
                self.expect_kw("MAPS")?;
                return Ok(Statement::ShowCategoryMaps);
            }
            self.expect_kw("EXPORTS")?;
            return Ok(Statement::ShowExports);
        }
        if self.eat_kw("DESCRIBE") {
            self.expect_kw("SEGMENT")?;
            return Ok(Statement::DescribeSegment(self.name("a segment name")?));
        }
        if self.eat_kw("EXPLAIN") {
            self.expect_kw("SEGMENT")?;
            let name = self.name("a segment name")?;
            if self.eat_kw("FOR") {
                self.expect_kw("USER")?;
                let id = self.string("the user's id (a raw id or a pseudonym)")?;
                return Ok(Statement::ExplainForUser { name, id });
            }
            return Ok(Statement::ExplainSegment(name));
        }
        if self.eat_kw("ALTER") {
            if self.eat_kw("DATABASE") {
                let set = if self.eat_kw("SET") {
                    true
                } else if self.eat_kw("RESET") {
                    false
                } else {
                    return Err(self.error_here(
                        "expected SET INTERESTS HALF LIFE '7 days' or RESET INTERESTS HALF LIFE",
                    ));
                };
                self.expect_kw("INTERESTS")?;
                self.expect_kw("HALF")?;
                self.expect_kw("LIFE")?;
                if !set {
                    return Ok(Statement::SetHalfLife(None));
                }
                let pos = self.pos_at(self.i);
                let text = self.string("the half-life (e.g. '7 days')")?;
                if crate::storage::settings::half_life_micros(&text).is_none() {
                    return Err(ParseError {
                        message: format!(
                            "{text:?} is not a half-life: write a duration between one hour and ten years, e.g. '7 days' or '36 hours'"
                        ),
                        pos,
                    });
                }
                return Ok(Statement::SetHalfLife(Some(text)));
            }
            if self.eat_kw("EXPORT") {
                let name = self.name("an export name")?;
                if !self.eat_kw("RESUME") {
                    return Err(self.error_here("expected RESUME: ALTER EXPORT name RESUME"));
                }
                return Ok(Statement::ResumeExport(name));
            }
            if self.eat_kw("SOURCE") {
                let name = self.name("a source name")?;
                self.expect_kw("ROTATE")?;
                self.expect_kw("KEY")?;
                return Ok(Statement::RotateSourceKey(name));
            }
            if self.eat_kw("SEGMENT") {
                let name = self.name("a segment name")?;
                self.expect_kw("SET")?;
                let change = if self.eat_kw("REFRESH") {
                    AlterSegment::Refresh(self.refresh()?)
                } else if self.eat_kw("KEEP") {
                    AlterSegment::Keep(self.keep()?)
                } else if self.is_kw("HOLDOUT") {
                    return Err(self.error_here("the holdout share cannot change (it would reshuffle users); use CREATE OR REPLACE MATERIALIZED SEGMENT … HOLDOUT n PERCENT, which starts a new history"));
                } else {
                    return Err(self.error_here("expected SET REFRESH … or SET KEEP n VERSIONS"));
                };
                return Ok(Statement::AlterSegment { name, change });
            }
            self.expect_kw("TABLE")?;
            let table = self.name("a table name")?;
            if self.eat_kw("RESET") {
                self.expect_kw("RETENTION")?;
                return Ok(Statement::SetRetention { table, days: None });
            }
            if self.eat_kw("ALTER") {
                self.eat_kw("COLUMN");
                let column = self.name("a column name")?;
                if self.eat_kw("SET") {
                    self.expect_kw("DATA")?;
                }
                self.expect_kw("TYPE")?;
                let to = self.wide_type()?;
                if !self.at_end() {
                    return Err(self.error_here("expected the end of the statement"));
                }
                return Ok(Statement::AlterColumnType { table, column, to });
            }
            self.expect_kw("SET")?;
            if self.eat_kw("RETENTION") {
                let pos = self.pos_at(self.i);
                let n = self.number("the number of days")?;
                if !(self.eat_kw("DAYS") || self.eat_kw("DAY")) {
                    return Err(self.error_here("expected DAYS"));
                }
                if n == 0 || n > u64::from(u32::MAX) {
                    return Err(ParseError {
                        message: "retention must be at least 1 day".into(),
                        pos,
                    });
                }
                return Ok(Statement::SetRetention {
                    table,
                    days: Some(n as u32),
                });
            }
            self.expect_kw("PII")?;
            return self.pii(table);
        }
        if self.eat_kw("REFRESH") {
            self.expect_kw("SEGMENT")?;
            let name = self.name("a segment name")?;
            let as_of = if self.eat_kw("AS") {
                self.expect_kw("OF")?;
                Some(self.timestamp("the as_of time")?)
            } else {
                None
            };
            return Ok(Statement::RefreshSegment { name, as_of });
        }
        if self.eat_kw("EXPORT") {
            self.expect_kw("SEGMENT")?;
            let start = self.i;
            let segment = self.name("a segment name")?;
            let (spec, on_refresh) = self.export_spec(segment, start)?;
            if on_refresh {
                return Err(self.error_at(start, "ON REFRESH belongs to a standing export: CREATE EXPORT name FOR SEGMENT … ON REFRESH"));
            }
            return Ok(Statement::Export(spec));
        }
        if self.eat_kw("FORGET") {
            if self.eat_kw("USER") {
                let id = self.string("one quoted id: FORGET USER 'raw-id-or-pseudonym'")?;
                return Ok(Statement::Forget(ForgetTarget::User(id)));
            }
            self.expect_kw("USERS")?;
            self.expect_kw("IN")?;
            self.expect_punct(&Token::LParen, "'(' and a query returning user_id")?;
            let q = self.sql(false, "a query returning user_id")?;
            self.expect_punct(&Token::RParen, "')'")?;
            return Ok(Statement::Forget(ForgetTarget::Users(q)));
        }
        if self.eat_kw("VACUUM") {
            return Ok(Statement::Vacuum);
        }
        if self.eat_kw("OPTIMIZE") {
            let table = if self.at_end() {
                None
            } else {
                Some(self.name("a table name")?)
            };
            return Ok(Statement::Optimize(table));
        }
        Err(self.error_here("expected a segdb statement"))
    }

    fn error_at(&self, j: usize, message: &str) -> ParseError {
        ParseError {
            message: message.into(),
            pos: self.pos_at(j),
        }
    }

    fn create_segment(
        &mut self,
        or_replace: bool,
        materialized: bool,
    ) -> Result<Statement, ParseError> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.name("a segment name")?;
        let (mut purposes, mut comment, mut refresh, mut holdout, mut keep) =
            (Vec::new(), None, None, None, None);
        loop {
            let at = self.i;
            let needs_mat = |p: &Self, what: &str| -> Result<(), ParseError> {
                if materialized {
                    Ok(())
                } else {
                    Err(p.error_at(
                        at,
                        &format!(
                            "{what} applies to materialised segments: CREATE MATERIALIZED SEGMENT …"
                        ),
                    ))
                }
            };
            if self.eat_kw("FOR") {
                purposes.extend(self.purposes()?);
            } else if self.eat_kw("COMMENT") {
                comment = Some(self.string("a comment")?);
            } else if self.eat_kw("REFRESH") {
                needs_mat(self, "REFRESH")?;
                refresh = Some(self.refresh()?);
            } else if self.eat_kw("HOLDOUT") {
                needs_mat(self, "HOLDOUT")?;
                let pos = self.pos_at(self.i);
                let n = self.number("the holdout share in percent")?;
                if !self.eat_kw("PERCENT") {
                    return Err(self.error_here("expected PERCENT"));
                }
                if !(1..=99).contains(&n) {
                    return Err(ParseError {
                        message: format!(
                            "HOLDOUT {n} PERCENT: the share must be a whole number from 1 to 99"
                        ),
                        pos,
                    });
                }
                holdout = Some(n as u8);
            } else if self.eat_kw("KEEP") {
                needs_mat(self, "KEEP")?;
                keep = Some(self.keep()?);
            } else {
                break;
            }
        }
        if or_replace && if_not_exists {
            return Err(self.error_at(0, "OR REPLACE and IF NOT EXISTS cannot be combined"));
        }
        self.expect_kw("AS")?;
        let (expr, definition) = self.rest_expr()?;
        Ok(Statement::CreateSegment(CreateSegment {
            name,
            or_replace,
            if_not_exists,
            materialized,
            refresh,
            holdout_percent: holdout,
            keep_versions: keep,
            purposes,
            comment,
            definition,
            expr,
        }))
    }

    /// A segment expression and its text as written.
    fn rest_expr(&mut self) -> Result<(Expr, String), ParseError> {
        let start = self
            .toks
            .get(self.i)
            .map(|t| t.start)
            .unwrap_or(self.src.len());
        let expr = if self.is_kw("LOOKALIKE") {
            Expr::Leaf(Leaf::Lookalike(Box::new(self.lookalike()?)))
        } else {
            self.expr()?
        };
        let end = self
            .toks
            .get(self.i.saturating_sub(1))
            .map(|t| t.end)
            .unwrap_or(start);
        Ok((expr, self.src[start..end.max(start)].trim().to_string()))
    }

    fn create_trait(&mut self, or_replace: bool) -> Result<CreateTrait, ParseError> {
        let if_not_exists = self.if_not_exists()?;
        if or_replace && if_not_exists {
            return Err(self.error_at(0, "OR REPLACE and IF NOT EXISTS cannot be combined"));
        }
        let name = self.name("a trait name")?;
        self.expect_kw("AS")?;
        let start = self
            .toks
            .get(self.i)
            .map(|t| t.start)
            .unwrap_or(self.src.len());
        let agg = self.trait_agg()?;
        self.expect_kw("OF")?;
        let event = if self.eat_kw("ANY") {
            self.expect_kw("EVENT")?;
            EventRef::Any
        } else {
            self.expect_kw("EVENT")?;
            EventRef::Named(self.string("an event name")?)
        };
        let filter = if self.eat_kw("WHERE") {
            Some(self.sql(true, "a predicate after WHERE")?)
        } else {
            None
        };
        let window = self.window()?;
        let end = self
            .toks
            .get(self.i.saturating_sub(1))
            .map(|t| t.end)
            .unwrap_or(start);
        Ok(CreateTrait {
            name,
            or_replace,
            if_not_exists,
            agg,
            event,
            filter,
            window,
            definition: self.src[start..end.max(start)].trim().to_string(),
        })
    }

    fn paren_sql(&mut self, what: &str) -> Result<Sql, ParseError> {
        self.expect_punct(&Token::LParen, &format!("'(' and {what}"))?;
        let s = self.sql(false, what)?;
        self.expect_punct(&Token::RParen, "')'")?;
        Ok(s)
    }

    fn trait_agg(&mut self) -> Result<TraitAgg, ParseError> {
        let col = "a column or expression over event properties";
        if self.eat_kw("COUNT") {
            if self.eat_kw("DISTINCT") {
                return Ok(TraitAgg::CountDistinct(self.paren_sql(col)?));
            }
            // COUNT(DISTINCT x) and COUNT(*) are the SQL spellings of the same.
            if self.tok(self.i) == Some(&Token::LParen) {
                if self.is_kw_at(self.i + 1, "DISTINCT") {
                    self.i += 2;
                    let s = self.sql(false, col)?;
                    self.expect_punct(&Token::RParen, "')'")?;
                    return Ok(TraitAgg::CountDistinct(s));
                }
                if self.tok(self.i + 1) == Some(&Token::Mul)
                    && self.tok(self.i + 2) == Some(&Token::RParen)
                {
                    self.i += 3;
                }
            }
            return Ok(TraitAgg::Count);
        }
        let which = match self.tok(self.i) {
            Some(Token::Word(w)) => w.value.to_ascii_uppercase(),
            _ => String::new(),
        };
        let make: fn(Sql) -> TraitAgg = match which.as_str() {
            "SUM" => TraitAgg::Sum,
            "MIN" => TraitAgg::Min,
            "MAX" => TraitAgg::Max,
            "FIRST" => TraitAgg::First,
            "LAST" => TraitAgg::Last,
            "MOST_FREQUENT" => TraitAgg::MostFrequent,
            _ => {
                return Err(self.error_here(
                    "expected COUNT, SUM(…), MIN(…), MAX(…), FIRST(…), LAST(…), MOST_FREQUENT(…) or COUNT DISTINCT(…)",
                ));
            }
        };
        self.i += 1;
        Ok(make(self.paren_sql(col)?))
    }

    fn create_export(&mut self) -> Result<Statement, ParseError> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.name("an export name")?;
        self.expect_kw("FOR")?;
        self.expect_kw("SEGMENT")?;
        let start = self.i;
        let segment = self.name("a segment name")?;
        let (spec, on_refresh) = self.export_spec(segment, start)?;
        if !on_refresh {
            return Err(
                self.error_here("expected ON REFRESH (a standing export runs after each refresh)")
            );
        }
        if spec.changes.is_some() {
            return Err(self.error_at(start, "a standing export sends the changes of each refresh by itself; leave out CHANGES FROM"));
        }
        Ok(Statement::CreateExport {
            name,
            if_not_exists,
            spec,
        })
    }

    /// `TO 'url' [options]` (and, for CREATE EXPORT, the closing `ON REFRESH`).
    fn export_spec(
        &mut self,
        segment: String,
        start: usize,
    ) -> Result<(ExportSpec, bool), ParseError> {
        self.expect_kw("TO")?;
        let url = self.string("a target URL (a directory, file://… or s3://bucket/prefix)")?;
        let mut spec = ExportSpec {
            segment,
            url,
            format: None,
            preset: None,
            columns: Vec::new(),
            changes: None,
            purposes: Vec::new(),
            max_rows_per_file: None,
            secret: None,
            text: String::new(),
        };
        let mut on_refresh = false;
        // The token range of SECRET '…' / WRITE KEY '…', left out of the stored text.
        let mut secret_at: Option<(usize, usize)> = None;
        loop {
            if self.eat_kw("FORMAT") {
                spec.format = Some(
                    match self.name("parquet, csv, webhook or segment")?.as_str() {
                        "parquet" => ExportFormat::Parquet,
                        "csv" => ExportFormat::Csv,
                        "webhook" => ExportFormat::Webhook,
                        "segment" => ExportFormat::Segment,
                        _ => {
                            return Err(self.error_at(
                                self.i - 1,
                                "FORMAT is parquet, csv, webhook or segment",
                            ));
                        }
                    },
                );
            } else if self.is_kw("SECRET")
                || (self.is_kw("WRITE") && self.is_kw_at(self.i + 1, "KEY"))
            {
                let from = self.i;
                let write_key = self.eat_kw("WRITE");
                if write_key {
                    self.expect_kw("KEY")?;
                } else {
                    self.expect_kw("SECRET")?;
                }
                if spec.secret.is_some() {
                    return Err(self.error_at(from, "SECRET or WRITE KEY is given once"));
                }
                let v = self.string(if write_key {
                    "the write key of the Segment-compatible source"
                } else {
                    "a secret such as 'whsec_…' (base64 after the prefix)"
                })?;
                let ok = if write_key {
                    spec.format == Some(ExportFormat::Segment)
                } else {
                    spec.format == Some(ExportFormat::Webhook)
                };
                if !ok {
                    return Err(self.error_at(
                        from,
                        if write_key {
                            "WRITE KEY belongs to FORMAT segment (write FORMAT segment before it)"
                        } else {
                            "SECRET belongs to FORMAT webhook (write FORMAT webhook before it)"
                        },
                    ));
                }
                spec.secret = Some(v);
                secret_at = Some((from, self.i));
            } else if self.eat_kw("PRESET") {
                spec.preset = Some(match self.name("google, meta or tiktok")?.as_str() {
                    "google" => Preset::Google,
                    "meta" => Preset::Meta,
                    "tiktok" => Preset::Tiktok,
                    _ => return Err(self.error_at(self.i - 1, "PRESET is google, meta or tiktok")),
                });
            } else if self.eat_kw("COLUMNS") {
                self.expect_punct(&Token::LParen, "'(' and expr AS alias, …")?;
                loop {
                    let e = self.sql_until_as("an expression over profile columns")?;
                    self.expect_kw("AS")?;
                    let alias = self.name("a column alias")?;
                    spec.columns.push((e, alias));
                    if !self.eat_punct(&Token::Comma) {
                        break;
                    }
                }
                self.expect_punct(&Token::RParen, "')'")?;
            } else if self.eat_kw("CHANGES") {
                self.expect_kw("FROM")?;
                self.expect_kw("VERSION")?;
                let a = self.number("a version")?;
                let b = if self.eat_kw("TO") {
                    self.expect_kw("VERSION")?;
                    Some(self.number("a version")?)
                } else {
                    None
                };
                if let Some(b) = b
                    && b < a
                {
                    return Err(self.error_at(
                        self.i - 1,
                        "CHANGES FROM VERSION a TO VERSION b needs a ≤ b",
                    ));
                }
                spec.changes = Some((a, b));
            } else if self.eat_kw("FOR") {
                spec.purposes.extend(self.purposes()?);
            } else if self.eat_kw("MAX") {
                self.expect_kw("ROWS")?;
                self.expect_kw("PER")?;
                self.expect_kw("FILE")?;
                let n = self.number("rows per file")?;
                if n == 0 {
                    return Err(self.error_at(self.i - 1, "MAX ROWS PER FILE must be at least 1"));
                }
                spec.max_rows_per_file = Some(n);
            } else if self.is_kw("ON") && self.is_kw_at(self.i + 1, "REFRESH") {
                self.i += 2;
                on_refresh = true;
            } else {
                break;
            }
        }
        let end = self.i;
        spec.text = match secret_at {
            Some((a, b)) => {
                let (head, tail) = (self.text_between(start, a), self.text_between(b, end));
                if tail.is_empty() {
                    head
                } else {
                    format!("{head} {tail}")
                }
            }
            None => self.text_between(start, end),
        };
        Ok((spec, on_refresh))
    }

    fn text_between(&self, a: usize, b: usize) -> String {
        match (self.toks.get(a), self.toks.get(b.saturating_sub(1))) {
            (Some(x), Some(y)) if b > a => self.src[x.start..y.end].to_string(),
            _ => String::new(),
        }
    }

    /// Embedded SQL up to a top-level `AS`.
    fn sql_until_as(&mut self, what: &str) -> Result<Sql, ParseError> {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(t) = self.tok(self.i) {
            match t {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => break,
                _ if depth == 0 && self.is_kw("AS") => break,
                _ => {}
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error_here(&format!("expected {what}")));
        }
        Ok(Sql {
            text: self.text_between(start, self.i),
            pos: self.toks[start].pos,
        })
    }

    fn pii(&mut self, table: String) -> Result<Statement, ParseError> {
        self.expect_punct(
            &Token::LParen,
            "'(' and column AS EMAIL|PHONE ['CC']|FIRST_NAME|LAST_NAME|ZIP ['CC']|MAID|DROP|KEEP, …",
        )?;
        let mut rules = Vec::new();
        loop {
            let col = self.name("a column name")?;
            self.expect_kw("AS")?;
            let pos = self.pos_at(self.i);
            let rule = if self.eat_kw("EMAIL") {
                PiiRule::Email
            } else if self.eat_kw("PHONE") {
                let cc = match self.tok(self.i) {
                    Some(Token::SingleQuotedString(s)) => {
                        let s = s.clone();
                        self.i += 1;
                        Some(s)
                    }
                    _ => None,
                };
                match cc {
                    None => PiiRule::Phone(None),
                    Some(c) => match PiiRule::parse(&format!("PHONE:{c}")) {
                        Some(r) => r,
                        None => {
                            return Err(ParseError {
                                message: format!(
                                    "'{c}' is not a two-letter country code (e.g. 'DE')"
                                ),
                                pos,
                            });
                        }
                    },
                }
            } else if self.eat_kw("DROP") {
                PiiRule::Drop
            } else if self.eat_kw("KEEP") {
                PiiRule::Keep
            } else if self.eat_kw("FIRST_NAME") {
                PiiRule::FirstName
            } else if self.eat_kw("LAST_NAME") {
                PiiRule::LastName
            } else if self.eat_kw("MAID") {
                PiiRule::Maid
            } else if self.eat_kw("IP_COUNTRY") {
                PiiRule::IpCountry
            } else if self.eat_kw("USER_AGENT") {
                PiiRule::UserAgent
            } else if self.eat_kw("ZIP") {
                match self.tok(self.i) {
                    Some(Token::SingleQuotedString(s)) => {
                        let c = s.clone();
                        self.i += 1;
                        PiiRule::parse(&format!("ZIP:{c}")).ok_or_else(|| ParseError {
                            message: format!("'{c}' is not a two-letter country code (e.g. 'US')"),
                            pos,
                        })?
                    }
                    _ => PiiRule::Zip(None),
                }
            } else {
                return Err(self.error_here(
                    "expected EMAIL, PHONE, FIRST_NAME, LAST_NAME, ZIP, MAID, IP_COUNTRY, USER_AGENT, DROP or KEEP",
                ));
            };
            rules.push((col, rule));
            if !self.eat_punct(&Token::Comma) {
                break;
            }
        }
        self.expect_punct(&Token::RParen, "')'")?;
        Ok(Statement::SetPii { table, rules })
    }

    /// DOUBLE [PRECISION] | FLOAT8 | DECIMAL(p, s) | NUMERIC(p, s) | VARCHAR | TEXT | STRING.
    fn wide_type(&mut self) -> Result<WideType, ParseError> {
        if self.eat_kw("DOUBLE") {
            self.eat_kw("PRECISION");
            return Ok(WideType::Double);
        }
        if self.eat_kw("FLOAT8") {
            return Ok(WideType::Double);
        }
        if self.eat_kw("VARCHAR") || self.eat_kw("TEXT") || self.eat_kw("STRING") {
            return Ok(WideType::Varchar);
        }
        if self.eat_kw("DECIMAL") || self.eat_kw("NUMERIC") {
            self.expect_punct(&Token::LParen, "'(' and the precision, e.g. DECIMAL(12, 2)")?;
            let pos = self.pos_at(self.i);
            let p = self.number("the precision")?;
            let s = if self.eat_punct(&Token::Comma) {
                self.number("the scale")?
            } else {
                0
            };
            self.expect_punct(&Token::RParen, "')'")?;
            if !(1..=38).contains(&p) || s > p {
                return Err(ParseError {
                    message: format!(
                        "DECIMAL({p}, {s}) is not a decimal type: the precision is 1 to 38 and the scale at most the precision"
                    ),
                    pos,
                });
            }
            return Ok(WideType::Decimal(p as u8, s as i8));
        }
        Err(self.error_here(
            "expected DOUBLE, DECIMAL(p, s) or VARCHAR (SET DATA TYPE widens a column to one of these)",
        ))
    }
}
