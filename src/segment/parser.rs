//! The segment-language parser. SQL's tokenizer (sqlparser, as DataFusion uses it) splits the text;
//! a small recursive-descent parser reads the segment grammar and cuts out embedded SQL
//! (predicates, queries) by position, to be parsed and type-checked by DataFusion later.
//!
//! Where an embedded predicate ends: at a closing parenthesis or the end, at `AND`/`OR` followed by
//! a leaf (`PROFILE`, `DID`, `IN SEGMENT`, `USERS IN`, `ALL USERS`, possibly after `(` or `NOT`),
//! and, inside `DID … WHERE`, at `THEN`, `WITHIN`, a frequency (`AT LEAST`, `AT MOST`, `EXACTLY`,
//! `BETWEEN n AND m TIMES`) or a window (`IN THE LAST`, `SINCE`, `BETWEEN '…' AND '…'` at the end
//! of the leaf). A SQL `BETWEEN` over two string literals at the very end of a `WHERE` therefore
//! reads as a window: parenthesise it to keep it in the predicate.

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::ast::*;

/// A syntax error with its position and, when there is one, a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub pos: Pos,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at {})", self.message, self.pos)
    }
}

struct Tok {
    token: Token,
    start: usize,
    end: usize,
    pos: Pos,
}

/// Does `src` start one of segdb's own statements (rather than a DataFusion one)?
pub fn starts_statement(src: &str) -> bool {
    Parser::new(src).is_ok_and(|p| p.at_statement())
}

/// Parse one segdb statement.
pub fn parse_statement(src: &str) -> Result<Statement, ParseError> {
    let mut p = Parser::new(src)?;
    let stmt = p.statement()?;
    p.eat_punct(&Token::SemiColon);
    if !p.at_end() {
        return Err(p.error_here("expected the end of the statement"));
    }
    Ok(stmt)
}

/// Parse a bare segment expression (what follows `AS`).
pub fn parse_expr(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser::new(src)?;
    let e = if p.is_kw("LOOKALIKE") {
        Expr::Leaf(Leaf::Lookalike(Box::new(p.lookalike()?)))
    } else {
        p.expr()?
    };
    p.eat_punct(&Token::SemiColon);
    if !p.at_end() {
        return Err(p.error_here("expected AND, OR or the end of the segment expression"));
    }
    Ok(e)
}

/// The deepest nesting of `NOT` and parentheses in a segment expression. Compiling, printing
/// and dropping an expression recurse over it, so its depth is bounded before anything else
/// (the role check included) looks at it.
pub const MAX_DEPTH: usize = 200;

/// The most leaves one segment expression may have. A chain of `n` ORs is as deep as it is
/// long; combining many values belongs inside one leaf (`DID 'e' WHERE col IN (…)`).
pub const MAX_LEAVES: usize = 1_000;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    i: usize,
    /// `NOT`s and parentheses open at the current token.
    depth: usize,
    /// Leaves read so far.
    leaves: usize,
}

/// Byte offsets of (line, column) positions, for positions asked in increasing order (as
/// tokens come): one pass over the text in all, where a search from the line's start for each
/// token would take time quadratic in the length of a long line.
pub struct Offsets<'a> {
    src: &'a str,
    /// The last position found and its byte offset.
    line: u64,
    column: u64,
    byte: usize,
}

impl<'a> Offsets<'a> {
    pub fn new(src: &'a str) -> Self {
        Offsets {
            src,
            line: 1,
            column: 1,
            byte: 0,
        }
    }

    /// The byte offset of `(line, column)` (1-based; the end of the text past it).
    pub fn of(&mut self, line: u64, column: u64) -> usize {
        if (line, column) < (self.line, self.column) {
            // Out of order (not expected): start again from the beginning.
            *self = Offsets::new(self.src);
        }
        while (self.line, self.column) < (line, column) {
            let Some(c) = self.src[self.byte..].chars().next() else {
                return self.src.len();
            };
            if c == '\n' {
                if self.line == line {
                    // A column past the end of its line: the end of that line.
                    return self.byte;
                }
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
            self.byte += c.len_utf8();
        }
        self.byte
    }
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, ParseError> {
        let dialect = GenericDialect {};
        let raw = Tokenizer::new(&dialect, src)
            .tokenize_with_location()
            .map_err(|e| ParseError {
                message: e.message.clone(),
                pos: Pos {
                    line: e.location.line,
                    column: e.location.column,
                },
            })?;
        let mut starts = Offsets::new(src);
        let mut ends = Offsets::new(src);
        let toks = raw
            .into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| Tok {
                start: starts.of(t.span.start.line, t.span.start.column),
                end: ends.of(t.span.end.line, t.span.end.column),
                pos: Pos {
                    line: t.span.start.line,
                    column: t.span.start.column,
                },
                token: t.token,
            })
            .collect();
        Ok(Parser {
            src,
            toks,
            i: 0,
            depth: 0,
            leaves: 0,
        })
    }

    fn at_end(&self) -> bool {
        self.i >= self.toks.len()
    }
    fn tok(&self, j: usize) -> Option<&Token> {
        self.toks.get(j).map(|t| &t.token)
    }
    fn pos_at(&self, j: usize) -> Pos {
        self.toks.get(j).map(|t| t.pos).unwrap_or_else(|| {
            self.toks
                .last()
                .map(|t| Pos {
                    line: t.pos.line,
                    column: t.pos.column + (t.end - t.start) as u64,
                })
                .unwrap_or(Pos { line: 1, column: 1 })
        })
    }
    fn describe(&self, j: usize) -> String {
        match self.toks.get(j) {
            None => "the end".to_string(),
            Some(t) => format!("'{}'", &self.src[t.start..t.end]),
        }
    }
    fn error_here(&self, expected: &str) -> ParseError {
        ParseError {
            message: format!("{expected}, found {}", self.describe(self.i)),
            pos: self.pos_at(self.i),
        }
    }
    fn is_kw_at(&self, j: usize, kw: &str) -> bool {
        matches!(self.tok(j), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
    }
    fn is_kw(&self, kw: &str) -> bool {
        self.is_kw_at(self.i, kw)
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected {kw}")))
        }
    }
    fn eat_punct(&mut self, t: &Token) -> bool {
        if self.tok(self.i) == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, t: &Token, what: &str) -> Result<(), ParseError> {
        if self.eat_punct(t) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected {what}")))
        }
    }
    fn string(&mut self, what: &str) -> Result<String, ParseError> {
        match self.tok(self.i) {
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.error_here(&format!("expected {what} (a quoted string)"))),
        }
    }
    fn number(&mut self, what: &str) -> Result<u64, ParseError> {
        match self.tok(self.i) {
            Some(Token::Number(n, _)) => {
                let v = n.parse::<u64>().map_err(|_| ParseError {
                    message: format!("{what} must be a whole number"),
                    pos: self.pos_at(self.i),
                })?;
                self.i += 1;
                Ok(v)
            }
            _ => Err(self.error_here(&format!("expected {what} (a whole number)"))),
        }
    }
    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        match self.tok(self.i) {
            Some(Token::Word(w)) => {
                let n = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_lowercase()
                };
                self.i += 1;
                Ok(n)
            }
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.error_here(&format!("expected {what}"))),
        }
    }
    /// A timestamp resolved against now (`REFRESH … AS OF`).
    fn timestamp(&mut self, what: &str) -> Result<i64, ParseError> {
        let ts = self.window_ts(what)?;
        Ok(ts.resolve(chrono::Utc::now().timestamp_micros()))
    }

    /// A timestamp of a window: absolute, or relative to the evaluation's `as_of`.
    fn window_ts(&mut self, what: &str) -> Result<crate::time::Ts, ParseError> {
        let pos = self.pos_at(self.i);
        let s = self.string(what)?;
        crate::time::Ts::parse(&s).ok_or(ParseError {
            message: format!("{what} is not an ISO-8601 timestamp (e.g. '2026-01-31T00:00:00Z'; no zone means UTC) nor a relative one ('today', 'yesterday', '-7 days', '-3 months')"),
            pos,
        })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat_kw("OR") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.eat_kw("AND") {
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        let pos = self.pos_at(self.i);
        if self.is_kw("NOT") || self.tok(self.i) == Some(&Token::LParen) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(ParseError {
                    message: format!(
                        "segment expression is nested too deeply: at most {MAX_DEPTH} levels of NOT and parentheses"
                    ),
                    pos,
                });
            }
            let e = if self.eat_kw("NOT") {
                self.not().map(|e| Expr::Not(Box::new(e)))
            } else {
                self.eat_punct(&Token::LParen);
                self.expr()
                    .and_then(|e| self.expect_punct(&Token::RParen, "')'").map(|()| e))
            };
            self.depth -= 1;
            return e;
        }
        self.leaves += 1;
        if self.leaves > MAX_LEAVES {
            return Err(ParseError {
                message: format!(
                    "segment expression has too many conditions: at most {MAX_LEAVES} leaves; combine values inside one leaf, e.g. DID 'e' WHERE col IN (…) or PROFILE col IN (…)"
                ),
                pos,
            });
        }
        Ok(Expr::Leaf(self.leaf()?))
    }

    /// Does a leaf start at token `j` (after any `(` and `NOT`)?
    fn starts_leaf(&self, mut j: usize) -> bool {
        while self.tok(j) == Some(&Token::LParen) || self.is_kw_at(j, "NOT") {
            j += 1;
        }
        self.is_kw_at(j, "PROFILE")
            || self.is_kw_at(j, "DID")
            || (self.is_kw_at(j, "IN") && self.is_kw_at(j + 1, "SEGMENT"))
            || (self.is_kw_at(j, "USERS") && self.is_kw_at(j + 1, "IN"))
            || (self.is_kw_at(j, "ALL") && self.is_kw_at(j + 1, "USERS"))
            || self.is_kw_at(j, "TRAIT")
            || (self.is_kw_at(j, "INTERESTED") && self.is_kw_at(j + 1, "IN"))
    }

    fn is_number_at(&self, j: usize) -> bool {
        matches!(self.tok(j), Some(Token::Number(..)))
    }
    fn is_string_at(&self, j: usize) -> bool {
        matches!(self.tok(j), Some(Token::SingleQuotedString(_)))
    }

    /// Is token `j` where a leaf's tail may end (end, `;`, `)`, AND/OR + leaf, a frequency)?
    fn leaf_boundary(&self, j: usize) -> bool {
        match self.tok(j) {
            None | Some(Token::SemiColon) | Some(Token::RParen) => true,
            _ => {
                ((self.is_kw_at(j, "AND") || self.is_kw_at(j, "OR")) && self.starts_leaf(j + 1))
                    || self.freq_at(j)
                    || self.is_kw_at(j, "THEN")
                    || self.is_kw_at(j, "WITHIN")
            }
        }
    }

    fn freq_at(&self, j: usize) -> bool {
        (self.is_kw_at(j, "AT") && (self.is_kw_at(j + 1, "LEAST") || self.is_kw_at(j + 1, "MOST")))
            || self.is_kw_at(j, "EXACTLY")
            || (self.is_kw_at(j, "BETWEEN")
                && self.is_number_at(j + 1)
                && self.is_kw_at(j + 2, "AND")
                && self.is_number_at(j + 3)
                && self.is_kw_at(j + 4, "TIMES"))
    }

    fn window_at(&self, j: usize) -> bool {
        (self.is_kw_at(j, "IN") && self.is_kw_at(j + 1, "THE"))
            || self.is_kw_at(j, "SINCE")
            || (self.is_kw_at(j, "BETWEEN")
                && self.is_string_at(j + 1)
                && self.is_kw_at(j + 2, "AND")
                && self.is_string_at(j + 3)
                && self.leaf_boundary(j + 4))
    }

    /// Cut out embedded SQL up to the next boundary.
    fn sql(&mut self, in_did: bool, what: &str) -> Result<Sql, ParseError> {
        let start = self.i;
        let (mut depth, mut case) = (0usize, 0usize);
        while let Some(t) = self.tok(self.i) {
            match t {
                Token::SemiColon if depth == 0 => break,
                Token::LParen => depth += 1,
                Token::RParen => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                _ if depth == 0 => {
                    if self.is_kw("CASE") {
                        case += 1;
                    } else if self.is_kw("END") {
                        case = case.saturating_sub(1);
                    } else if (self.is_kw("AND") || self.is_kw("OR"))
                        && self.starts_leaf(self.i + 1)
                    {
                        break;
                    } else if in_did
                        && case == 0
                        && (self.is_kw("THEN")
                            || self.is_kw("WITHIN")
                            || self.freq_at(self.i)
                            || self.window_at(self.i))
                    {
                        break;
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error_here(&format!("expected {what}")));
        }
        let text = self.src[self.toks[start].start..self.toks[self.i - 1].end].to_string();
        Ok(Sql {
            text,
            pos: self.toks[start].pos,
        })
    }

    fn event(&mut self) -> Result<EventRef, ParseError> {
        if self.eat_kw("ANY") {
            self.expect_kw("EVENT")?;
            return Ok(EventRef::Any);
        }
        Ok(EventRef::Named(self.string("an event name or ANY EVENT")?))
    }

    fn event_spec(&mut self) -> Result<EventSpec, ParseError> {
        let event = self.event()?;
        let filter = if self.eat_kw("WHERE") {
            Some(self.sql(true, "a predicate after WHERE")?)
        } else {
            None
        };
        Ok(EventSpec { event, filter })
    }

    fn unit(&mut self) -> Result<Unit, ParseError> {
        let u = match self.tok(self.i) {
            Some(Token::Word(w)) => match w.value.to_ascii_uppercase().as_str() {
                "MINUTE" | "MINUTES" => Some(Unit::Minute),
                "HOUR" | "HOURS" => Some(Unit::Hour),
                "DAY" | "DAYS" => Some(Unit::Day),
                "WEEK" | "WEEKS" => Some(Unit::Week),
                "MONTH" | "MONTHS" => Some(Unit::Month),
                _ => None,
            },
            _ => None,
        };
        match u {
            Some(u) => {
                self.i += 1;
                Ok(u)
            }
            None => Err(self.error_here("expected MINUTES, HOURS, DAYS, WEEKS or MONTHS")),
        }
    }

    fn times(&mut self) {
        let _ = self.eat_kw("TIMES") || self.eat_kw("TIME");
    }

    fn freq(&mut self) -> Result<Option<Freq>, ParseError> {
        if !self.freq_at(self.i) {
            return Ok(None);
        }
        let f = if self.eat_kw("AT") {
            if self.eat_kw("LEAST") {
                Freq::AtLeast(self.number("a count")?)
            } else {
                self.expect_kw("MOST")?;
                Freq::AtMost(self.number("a count")?)
            }
        } else if self.eat_kw("EXACTLY") {
            Freq::Exactly(self.number("a count")?)
        } else {
            self.expect_kw("BETWEEN")?;
            let pos = self.pos_at(self.i);
            let a = self.number("a count")?;
            self.expect_kw("AND")?;
            let b = self.number("a count")?;
            if a > b {
                return Err(ParseError {
                    message: format!(
                        "BETWEEN {a} AND {b} TIMES is empty: the lower bound is above the upper"
                    ),
                    pos,
                });
            }
            Freq::Between(a, b)
        };
        self.times();
        Ok(Some(f))
    }

    fn window(&mut self) -> Result<Option<Window>, ParseError> {
        if self.eat_kw("IN") {
            self.expect_kw("THE")?;
            self.expect_kw("LAST")?;
            let n = self.number("a count")?;
            return Ok(Some(Window::Last(n, self.unit()?)));
        }
        if self.eat_kw("SINCE") {
            return Ok(Some(Window::Since(self.window_ts("the start")?)));
        }
        if self.is_kw("BETWEEN") && self.is_string_at(self.i + 1) {
            self.i += 1;
            let pos = self.pos_at(self.i);
            let a = self.window_ts("the start")?;
            self.expect_kw("AND")?;
            let b = self.window_ts("the end")?;
            if let (crate::time::Ts::At(a), crate::time::Ts::At(b)) = (a, b)
                && b < a
            {
                return Err(ParseError {
                    message: "the window's end is before its start".into(),
                    pos,
                });
            }
            return Ok(Some(Window::Between(a, b)));
        }
        Ok(None)
    }

    fn leaf(&mut self) -> Result<Leaf, ParseError> {
        let pos = self.pos_at(self.i);
        if self.eat_kw("PROFILE") {
            return Ok(Leaf::Profile(
                self.sql(false, "a predicate over profile columns")?,
            ));
        }
        if self.eat_kw("DID") {
            let first = self.event_spec()?;
            if self.eat_kw("THEN") {
                let then = self.event_spec()?;
                let within = if self.eat_kw("WITHIN") {
                    let n = self.number("a duration")?;
                    let at = self.pos_at(self.i);
                    let u = self.unit()?;
                    if u == Unit::Month {
                        return Err(ParseError {
                            message: "WITHIN takes a fixed length (MINUTES, HOURS, DAYS or WEEKS): a month's length depends on where it starts".into(),
                            pos: at,
                        });
                    }
                    Some((n, u))
                } else {
                    None
                };
                let window = self.window()?;
                if self.freq_at(self.i) {
                    return Err(self.error_here("a sequence (DID … THEN …) takes no frequency; expected a window or the end of the leaf"));
                }
                return Ok(Leaf::Sequence {
                    first,
                    then,
                    within,
                    window,
                    pos,
                });
            }
            // Frequency and window, in either order.
            let mut freq = self.freq()?;
            let window = self.window()?;
            if freq.is_none() {
                freq = self.freq()?;
            }
            return Ok(Leaf::Did {
                what: first,
                freq,
                window,
                pos,
            });
        }
        if self.is_kw("IN") && self.is_kw_at(self.i + 1, "SEGMENT") {
            self.i += 2;
            let p = self.pos_at(self.i);
            return Ok(Leaf::InSegment(self.name("a segment name")?, p));
        }
        if self.is_kw("USERS") && self.is_kw_at(self.i + 1, "IN") {
            self.i += 2;
            self.expect_punct(&Token::LParen, "'(' and a query returning user_id")?;
            let q = self.sql(false, "a query returning user_id")?;
            self.expect_punct(&Token::RParen, "')'")?;
            return Ok(Leaf::UsersIn(q));
        }
        if self.is_kw("ALL") && self.is_kw_at(self.i + 1, "USERS") {
            self.i += 2;
            return Ok(Leaf::AllUsers);
        }
        if self.eat_kw("TRAIT") {
            return Ok(Leaf::Trait(self.sql(false, "a predicate over traits")?));
        }
        if self.is_kw("INTERESTED") && self.is_kw_at(self.i + 1, "IN") {
            self.i += 2;
            let category =
                self.string("a category (an id such as 'content:1', a path or a name)")?;
            let min_score = if self.eat_kw("MIN") {
                self.expect_kw("SCORE")?;
                Some(self.score()?)
            } else {
                None
            };
            let window = self.window()?;
            return Ok(Leaf::Interested {
                category,
                min_score,
                window,
                pos,
            });
        }
        Err(self.error_here(
            "expected PROFILE, DID, TRAIT, INTERESTED IN, IN SEGMENT, USERS IN, ALL USERS, NOT or '('",
        ))
    }

    /// `LOOKALIKE OF seed [WITHIN seg_expr] (SIZE n | TOP p PERCENT | MIN SCORE s)
    /// [EXCLUDING SEED]`.
    pub(super) fn lookalike(&mut self) -> Result<Lookalike, ParseError> {
        let pos = self.pos_at(self.i);
        self.expect_kw("LOOKALIKE")?;
        self.expect_kw("OF")?;
        let seed = self.name("the seed segment's name")?;
        let within = if self.eat_kw("WITHIN") {
            // The audience clause ends the statement: find it from the end, and read the
            // expression up to it.
            let kw = |j: usize, k: &str| self.is_kw_at(j, k);
            let mut end = self.toks.len();
            if end > 0 && self.tok(end - 1) == Some(&Token::SemiColon) {
                end -= 1;
            }
            if end >= 2 && kw(end - 2, "EXCLUDING") && kw(end - 1, "SEED") {
                end -= 2;
            }
            let stop = if end >= 2 && kw(end - 2, "SIZE") {
                end - 2
            } else if end >= 3
                && ((kw(end - 3, "TOP") && kw(end - 1, "PERCENT"))
                    || (kw(end - 3, "MIN") && kw(end - 2, "SCORE")))
            {
                end - 3
            } else {
                return Err(self.error_here(
                    "a look-alike ends with its size: SIZE n, TOP p PERCENT or MIN SCORE s, then optionally EXCLUDING SEED",
                ));
            };
            if stop <= self.i {
                return Err(self.error_here("expected a segment expression after WITHIN"));
            }
            let tail = self.toks.split_off(stop);
            let e = self.expr();
            let left = self.i < self.toks.len();
            self.toks.extend(tail);
            let e = e?;
            if left {
                return Err(self.error_here(
                    "expected AND, OR or the look-alike's size after the WITHIN expression",
                ));
            }
            Some(e)
        } else {
            None
        };
        let size = if self.eat_kw("SIZE") {
            let at = self.pos_at(self.i);
            let n = self.number("the audience size")?;
            if n == 0 {
                return Err(ParseError {
                    message: "SIZE must be at least 1".into(),
                    pos: at,
                });
            }
            LookalikeSize::Size(n)
        } else if self.eat_kw("TOP") {
            let at = self.pos_at(self.i);
            let p = match self.tok(self.i) {
                Some(Token::Number(n, _)) => n.clone(),
                _ => {
                    return Err(
                        self.error_here("expected a percentage after TOP (e.g. TOP 5 PERCENT)")
                    );
                }
            };
            self.i += 1;
            self.expect_kw("PERCENT")?;
            if !p.parse::<f64>().is_ok_and(|v| v > 0.0 && v <= 100.0) {
                return Err(ParseError {
                    message: format!("TOP {p} PERCENT: the share must be above 0 and at most 100"),
                    pos: at,
                });
            }
            LookalikeSize::TopPercent(p)
        } else if self.eat_kw("MIN") {
            self.expect_kw("SCORE")?;
            let at = self.pos_at(self.i);
            let s = self.score()?;
            if !s.parse::<f64>().is_ok_and(|v| v <= 1.0) {
                return Err(ParseError {
                    message: format!(
                        "MIN SCORE {s}: a look-alike score is a probability between 0 and 1"
                    ),
                    pos: at,
                });
            }
            LookalikeSize::MinScore(s)
        } else {
            return Err(self.error_here(
                "expected the look-alike's size: SIZE n, TOP p PERCENT or MIN SCORE s",
            ));
        };
        let excluding_seed = if self.eat_kw("EXCLUDING") {
            self.expect_kw("SEED")?;
            true
        } else {
            false
        };
        Ok(Lookalike {
            seed,
            within,
            size,
            excluding_seed,
            pos,
        })
    }

    /// A non-negative decimal number (`MIN SCORE 1.5`), as written.
    fn score(&mut self) -> Result<String, ParseError> {
        match self.tok(self.i) {
            Some(Token::Number(n, _)) => match n.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => {
                    let n = n.clone();
                    self.i += 1;
                    Ok(n)
                }
                _ => Err(self.error_here("MIN SCORE takes a number of at least 0")),
            },
            _ => Err(self.error_here("expected a number after MIN SCORE (e.g. MIN SCORE 1.5)")),
        }
    }
}

mod statements;
#[cfg(test)]
mod tests;
