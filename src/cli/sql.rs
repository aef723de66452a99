//! `segdb sql`: run statements from -c / -f, from piped stdin, or interactively (history,
//! multi-line statements ending in `;`).

use std::io::{IsTerminal, Read, Write};
use std::time::Instant;

use crate::cli::output;
use crate::config::{GlobalOpts, OutputFormat, SqlArgs};
use crate::engine::Engine;
use crate::error::{Error, Result};

pub async fn run(global: &GlobalOpts, args: SqlArgs) -> Result<i32> {
    let file = global.file()?;
    let mut engine = Engine::open(&global.engine_config_of(&file)?)
        .await?
        .with_caller("cli")?;
    file.apply_to(engine.shared())?;
    if let Some(c) = &args.cluster {
        engine = engine.with_cluster_secret(c, file.cluster_secret()?)?;
    }
    let mut scripts: Vec<String> = args.command.clone();
    for f in &args.file {
        scripts.push(
            std::fs::read_to_string(f)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", f.display())))?,
        );
    }
    if scripts.is_empty() && !std::io::stdin().is_terminal() {
        // Piped input: statements and, on lines of their own, the shell's meta-commands.
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        let mut timing = args.timing;
        let mut buf = String::new();
        for line in s.lines() {
            let between = buf.trim().is_empty() || ends_statement(&buf);
            if between && let Some(m) = Meta::parse(line) {
                // The statements before it run first.
                for stmt in crate::statement::split(&std::mem::take(&mut buf)) {
                    if let Err(e) = execute(&engine, &stmt, args.format, timing).await {
                        eprintln!("Error: {}", one_line(&e));
                        return Ok(1);
                    }
                }
                if m == Meta::Quit {
                    return Ok(0);
                }
                if let Err(e) = m.run(&engine, args.format, &mut timing).await {
                    eprintln!("Error: {}", one_line(&e));
                    return Ok(1);
                }
                continue;
            }
            buf.push_str(line);
            buf.push('\n');
        }
        for stmt in crate::statement::split(&buf) {
            if let Err(e) = execute(&engine, &stmt, args.format, timing).await {
                eprintln!("Error: {}", one_line(&e));
                return Ok(1);
            }
        }
        return Ok(0);
    }
    if scripts.is_empty() {
        return repl(&engine, args.format, args.timing).await;
    }
    for script in &scripts {
        for stmt in crate::statement::split(script) {
            if let Err(e) = execute(&engine, &stmt, args.format, args.timing).await {
                eprintln!("Error: {}", one_line(&e));
                return Ok(1);
            }
        }
    }
    Ok(0)
}

/// Run one statement and print its result.
pub(crate) async fn execute(
    engine: &Engine,
    stmt: &str,
    format: OutputFormat,
    timing: bool,
) -> Result<()> {
    let started = Instant::now();
    let session = engine.session();
    let result = match session.parse_one(stmt) {
        Ok(p) => session.execute(&p, crate::statement::Role::Admin).await,
        Err(e) => Err(e),
    };
    let elapsed = started.elapsed();
    let result = result?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    output::print(&mut out, &result, format)?;
    out.flush()?;
    if timing {
        eprintln!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
    }
    Ok(())
}

pub(crate) fn one_line(e: &Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shell's meta-commands, as psql and DuckDB users type them.
#[derive(Debug, PartialEq, Eq)]
enum Meta {
    Help,
    Quit,
    /// `\d`, `\dt`, `.tables`: the tables and segments.
    Tables,
    /// `\d NAME`, `.schema NAME`: one table's columns.
    Describe(String),
    /// `\timing [on|off]`.
    Timing(Option<bool>),
    /// `\segments`: SHOW SEGMENTS.
    Segments,
    /// A backslash or dot command the shell does not know.
    Unknown(String),
}

const HELP: &str = "\
Statements end with ';' and may span lines. Meta-commands (one per line, no ';'):
  \\? or help        this help
  \\d  or .tables    list tables and segments
  \\d NAME           columns of a table (also .schema NAME)
  \\segments         SHOW SEGMENTS
  \\timing [on|off]  print how long each statement took
  \\q  or .quit      quit (also Ctrl-D)
Useful statements: SHOW TABLES; DESCRIBE events; SHOW SEGMENTS; EXPLAIN SEGMENT name;
SELECT segment_size('name'); SET segdb.as_of = '2026-01-31T00:00:00Z';
The README's \"Segment language\" section has the whole language.";

impl Meta {
    /// The meta-command on `line`, if it is one.
    fn parse(line: &str) -> Option<Meta> {
        let t = line.trim().trim_end_matches(';').trim();
        let (cmd, arg) = match t.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (t, ""),
        };
        let lower = cmd.to_ascii_lowercase();
        Some(match lower.as_str() {
            "help" | "\\?" | "\\h" | "\\help" | ".help" | "?" if arg.is_empty() => Meta::Help,
            "\\q" | "quit" | "exit" | ".quit" | ".exit" if arg.is_empty() => Meta::Quit,
            "\\d" | "\\dt" | ".tables" if arg.is_empty() => Meta::Tables,
            "\\d" | "\\d+" | ".schema" | ".describe" => Meta::Describe(arg.to_string()),
            "\\timing" | ".timer" => Meta::Timing(match arg.to_ascii_lowercase().as_str() {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            }),
            "\\segments" | ".segments" => Meta::Segments,
            c if c.starts_with('\\')
                || (c.starts_with('.')
                    && c.len() > 1
                    && c[1..].chars().all(|x| x.is_ascii_alphabetic())) =>
            {
                Meta::Unknown(cmd.to_string())
            }
            _ => return None,
        })
    }

    async fn run(&self, engine: &Engine, format: OutputFormat, timing: &mut bool) -> Result<()> {
        match self {
            Meta::Help => println!("{HELP}"),
            Meta::Quit => {}
            Meta::Tables => {
                execute(
                    engine,
                    "SELECT table_schema AS schema, table_name AS name, table_type AS type FROM information_schema.tables \
                     WHERE table_schema IN ('public', 'segments') ORDER BY table_schema, table_name",
                    format,
                    false,
                )
                .await?
            }
            Meta::Describe(name) => {
                execute(engine, &format!("DESCRIBE {name}"), format, false).await?
            }
            Meta::Timing(v) => {
                *timing = v.unwrap_or(!*timing);
                println!("Timing is {}.", if *timing { "on" } else { "off" });
            }
            Meta::Segments => execute(engine, "SHOW SEGMENTS", format, false).await?,
            Meta::Unknown(c) => {
                return Err(Error::invalid(format!(
                    "unknown meta-command {c}; type \\? for the list"
                )));
            }
        }
        Ok(())
    }
}

async fn repl(engine: &Engine, format: OutputFormat, timing: bool) -> Result<i32> {
    let mut timing = timing;
    use rustyline::error::ReadlineError;
    let mut rl = rustyline::DefaultEditor::new()
        .map_err(|e| Error::invalid(format!("cannot start the shell: {e}")))?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".segdb_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "segdb {} on {} — end statements with ';', \\? for help, \\q to quit",
        env!("CARGO_PKG_VERSION"),
        engine.database().location()
    );
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "segdb> "
        } else {
            "   ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                if buf.trim().is_empty()
                    && let Some(m) = Meta::parse(&line)
                {
                    if m == Meta::Quit {
                        break;
                    }
                    if let Err(e) = m.run(engine, format, &mut timing).await {
                        eprintln!("Error: {}", one_line(&e));
                    }
                    buf.clear();
                    continue;
                }
                if !buf.is_empty() {
                    buf.push('\n');
                }
                buf.push_str(&line);
                if !ends_statement(&buf) {
                    continue;
                }
                if keep_in_history(&buf) {
                    let _ = rl.add_history_entry(buf.as_str());
                }
                for stmt in crate::statement::split(&buf) {
                    if let Err(e) = execute(engine, &stmt, format, timing).await {
                        eprintln!("Error: {}", one_line(&e));
                    }
                }
                buf.clear();
            }
            Err(ReadlineError::Interrupted) => buf.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::invalid(format!("shell: {e}"))),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(0)
}

/// Statements that may carry a raw identifier (`FORGET USER 'raw'`, `pseudonymize('raw')`) are
/// kept out of the shell's history file: raw ids must not be written anywhere.
fn keep_in_history(stmt: &str) -> bool {
    let lower = stmt.to_ascii_lowercase();
    !(lower.contains("forget")
        || lower.contains("for user")
        || lower.contains("pseudonymize(")
        || lower.contains("hash_email(")
        || lower.contains("hash_phone("))
}

/// Lexical state while scanning SQL text.
#[derive(Clone, Copy, PartialEq)]
enum Lex {
    Code,
    Single,
    Double,
    LineComment,
    BlockComment,
}

/// Does the buffer end with a `;` outside quotes and comments (so the statement is complete)?
fn ends_statement(buf: &str) -> bool {
    let mut state = Lex::Code;
    let mut last_code = ' ';
    let mut chars = buf.chars().peekable();
    while let Some(c) = chars.next() {
        match state {
            Lex::Code => {
                match c {
                    '\'' => state = Lex::Single,
                    '"' => state = Lex::Double,
                    '-' if chars.peek() == Some(&'-') => state = Lex::LineComment,
                    '/' if chars.peek() == Some(&'*') => state = Lex::BlockComment,
                    _ => {}
                }
                if state == Lex::Code && !c.is_whitespace() {
                    last_code = c;
                }
            }
            Lex::Single if c == '\'' => state = Lex::Code,
            Lex::Double if c == '"' => state = Lex::Code,
            Lex::LineComment if c == '\n' => state = Lex::Code,
            Lex::BlockComment if c == '*' && chars.peek() == Some(&'/') => {
                chars.next();
                state = Lex::Code;
            }
            _ => {}
        }
    }
    matches!(state, Lex::Code | Lex::LineComment) && last_code == ';'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ids_stay_out_of_history() {
        assert!(keep_in_history("SELECT count(*) FROM events;"));
        assert!(!keep_in_history("FORGET USER 'alice@example.com';"));
        assert!(!keep_in_history(
            "SELECT * FROM profiles WHERE user_id = PSEUDONYMIZE('alice@example.com');"
        ));
    }

    #[test]
    fn statement_end_detection() {
        assert!(ends_statement("SELECT 1;"));
        assert!(ends_statement("SELECT 1; -- done"));
        assert!(!ends_statement("SELECT ';'"));
        assert!(!ends_statement("SELECT 1"));
        assert!(!ends_statement("SELECT 1 /* ; */"));
    }

    #[test]
    fn meta_commands_are_recognised_and_sql_is_not() {
        assert_eq!(Meta::parse("help"), Some(Meta::Help));
        assert_eq!(Meta::parse(" \\? "), Some(Meta::Help));
        assert_eq!(Meta::parse("\\d"), Some(Meta::Tables));
        assert_eq!(Meta::parse(".tables"), Some(Meta::Tables));
        assert_eq!(
            Meta::parse("\\d events"),
            Some(Meta::Describe("events".into()))
        );
        assert_eq!(
            Meta::parse(".schema profiles;"),
            Some(Meta::Describe("profiles".into()))
        );
        assert_eq!(Meta::parse("\\timing"), Some(Meta::Timing(None)));
        assert_eq!(Meta::parse("\\timing on"), Some(Meta::Timing(Some(true))));
        assert_eq!(Meta::parse("\\q"), Some(Meta::Quit));
        assert_eq!(Meta::parse("\\zz"), Some(Meta::Unknown("\\zz".into())));
        for sql in ["SELECT 1;", "select", "helpful_column, x", "1.5"] {
            assert_eq!(Meta::parse(sql), None, "{sql}");
        }
    }
}
